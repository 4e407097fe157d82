"""Whether a process recorded in a file (a run directory's claim, a temporary being written) still runs."""

from __future__ import annotations

import os


def process_runs(pid) -> bool:
    """True while process ``pid`` of this host runs (another user's process included)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
