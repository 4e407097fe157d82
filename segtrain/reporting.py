"""How a command ends: bad input in one ``error:`` line and exit 2, a stop signal in 128 + its number.

Used by the CLI and by every extra DDP rank, which is why it sits below both.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from typing import Callable, NoReturn

from segtrain.errors import SegtrainError


def _user_message(err: BaseException) -> str:
    """The error text, also when a DataLoader worker re-raised it with the worker's traceback."""
    lines = str(err).splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if re.match(rf"([\w.]+\.)?{type(err).__name__}: ", lines[index]):
            return "\n".join([lines[index].partition(": ")[2], *lines[index + 1 :]]).strip()
    return str(err)


def _instantiation_message(err: BaseException) -> str:
    """Hydra's "Error in call to target ..." as one line that names the config key and the fix."""
    if isinstance(err.__cause__, SegtrainError):
        return _user_message(err.__cause__)
    text = str(err)
    target = re.search(r"target '([^']+)'", text)
    key = re.search(r"full_key: (\S+)", text)
    where = f"{key.group(1) if key else 'an object'} ({target.group(1) if target else 'unknown target'})"
    cause = err.__cause__
    detail = " ".join(str(cause).split()) if cause is not None else " ".join(text.splitlines()[1:2])
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", detail)
    if unexpected and key:
        return (
            f"cannot build {where}: it takes no argument '{unexpected.group(1)}'. "
            f"Remove {key.group(1)}.{unexpected.group(1)} from the overrides"
        )
    return f"cannot build {where}: {detail}"


def report_errors(task: Callable, cfg, prefix: str = "error"):
    """Runs ``task(cfg)``; bad input ends in one ``error:`` line and exit 2, SIGTERM in exit 143."""
    from hydra.errors import InstantiationException
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    interrupted = []

    def on_interrupt(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_interrupt)
    try:
        return task(cfg)
    except SegtrainError as err:
        fail(_user_message(err), prefix)
    except InstantiationException as err:
        fail(_instantiation_message(err), prefix)
    except SIGTERMException:
        # Lightning exits 0 on SIGTERM, which a scheduler reads as success: report 128 + SIGTERM.
        _stopped_by("SIGTERM", 143)
    except KeyboardInterrupt:
        _stopped_by("SIGINT", 130)
    except SystemExit:
        # Lightning turns Ctrl+C into exit 1 after its graceful shutdown; the shell's convention is 128 + 2.
        if interrupted:
            _stopped_by("SIGINT", 130)
        raise


def _stopped_by(signal_name: str, code: int) -> NoReturn:
    print(f"segtrain: stopped by {signal_name}; the checkpoints written so far are kept", file=sys.stderr)
    sys.exit(code)


def fail(message: str, prefix: str = "error") -> NoReturn:
    print(f"{prefix}: {message}", file=sys.stderr)
    sys.exit(2)
