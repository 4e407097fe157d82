"""The one exception type a user sees as a clean message instead of a traceback."""


class SegtrainError(Exception):
    """Bad input: the message names the file or config key and says how to fix it."""
