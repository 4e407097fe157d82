"""How a command ends: bad input in one ``error:`` line and exit 2, a stop signal in 128 + its number.

Used by the CLI and by every extra DDP rank, which is why it sits below both.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable, NoReturn

from segtrain.errors import SegtrainError, instantiation_message, user_message


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
        fail(user_message(err), prefix)
    except InstantiationException as err:
        fail(instantiation_message(err), prefix)
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
