"""The one exception type minibert raises for bad input.

Its message is one line that names the problem (which file, which tensor,
which line); the CLI prints it and exits non-zero, with no traceback.
"""


class MinibertError(Exception):
    """Bad input: a model file, a config field, a tensor, an input line."""
