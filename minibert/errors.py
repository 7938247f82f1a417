"""The one exception type minibert raises for bad input.

Its message is one line that names the problem (which file, which tensor,
which line); the CLI prints it, through :func:`printable`, and exits
non-zero, with no traceback.
"""


class MinibertError(Exception):
    """Bad input: a model file, a config field, a tensor, an input line."""


def printable(message: str) -> str:
    """``message`` as one line that cannot drive a terminal: every character
    that is not printable -- C0 and C1 controls (ESC, CSI ``\\x9b``), DEL,
    line and paragraph separators, format characters such as the bidi
    overrides U+202E and U+2066..U+2069, lone surrogates -- escaped as
    ``repr`` escapes it (``\\x1b``, ``\\n``, ``\\u202e``). For whatever a
    file name or a value puts in a message the CLI prints."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else _escape(c) for c in message)


def _escape(c: str) -> str:
    n = ord(c)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c)
    return named or (f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
