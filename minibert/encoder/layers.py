"""Which layers: the one place a layer index or a list of them is resolved.

Indices follow transformers' ``output_hidden_states``: ``hidden_states[0]``
is the embedding output, ``hidden_states[i]`` the output of encoder layer i,
so a model of L layers has ``num_states = L + 1``; negative indices count
from the end (-1: the last layer). Every caller -- ``--layers`` of extract,
``minibert.words``, ``encode_long``, ``explain``/``plot``'s ``--layer``,
reading an output back -- resolves through these two functions, so they all
accept the same forms and give the same messages.

``what`` names the argument in messages: the library says ``layers``, the
command line passes ``--layers``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from minibert.errors import MinibertError

#: What ``resolve_layers`` accepts, for messages.
FORMS = "'all', a list like -4,-3,-2,-1, or a slice like 0:7"


def is_int(i) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))


def shown_int(i: int) -> str:
    """An integer for a message: its digits, or "a huge number" past 18 digits
    (Python refuses to print one of more than 4,300 digits)."""
    return str(int(i)) if abs(int(i)) < 10**18 else "a huge number"


def resolve_layer(layer, num_states: int, what: str = "layer", first: int = 0) -> int:
    """One layer index -> its non-negative index in ``range(first, num_states)``.

    ``first=1`` when only encoder layers make sense (explain's ``--layer``:
    the embeddings have no attention); negative indices still count from
    the last state (-1 is ``num_states - 1``).
    """
    if not is_int(layer):
        raise MinibertError(f"{what} must be an integer, got {layer!r:.40}")
    i = int(layer)
    count = num_states - first  # how many indices are valid
    if first <= i < num_states:
        return i
    if -count <= i <= -1:
        return num_states + i
    extra = "; hidden_states[0] is the embedding output" if first == 1 else ""
    raise MinibertError(
        f"{what} {shown_int(i)} is out of range: valid are {first}..{num_states - 1} (or -{count}..-1){extra}"
    )


def _parse(spec: str, num_states: int, what: str) -> list[int]:
    """``"all"``, ``"-4,-3,-2,-1"`` or ``"0:7"`` -> indices as given (maybe negative)."""
    spec = spec.strip()
    shown = spec if len(spec) <= 40 else spec[:40] + "..."
    if spec == "all":
        return list(range(num_states))
    try:
        if ":" not in spec:
            return [int(p) for p in spec.split(",")]
        parts = spec.split(":")
        if len(parts) > 3:
            raise ValueError
        start, stop, step = (int(p) if p.strip() else None for p in parts + [""] * (3 - len(parts)))
    except ValueError:
        raise MinibertError(f"{what} {shown!r}: expected {FORMS}") from None
    if step == 0:
        raise MinibertError(f"{what} {shown!r}: a slice step cannot be 0")
    for bound in (start, stop):
        if bound is not None and not -num_states <= bound <= num_states:
            raise MinibertError(
                f"{what} {shown!r}: index {bound} out of range (valid: 0..{num_states - 1}, "
                f"or -{num_states}..-1)"
            )
    return list(range(num_states))[slice(start, stop, step)]


def resolve_layers(layers, num_states: int, what: str = "layers") -> list[int]:
    """Layers -> non-negative ``hidden_states`` indices, in the order given.

    ``layers``: None or ``"all"`` (every state), a string (``"-4,-3,-2,-1"``,
    ``"0:7"``), one int, or an iterable of ints. An empty selection, a
    repeated layer, an index out of range or anything else is a
    :class:`MinibertError` naming ``what``.
    """
    if layers is None:
        return list(range(num_states))
    if isinstance(layers, str):
        indices = _parse(layers, num_states, what)
        shown = repr(layers.strip()[:40])
    elif is_int(layers):
        indices, shown = [layers], repr(int(layers))
    elif isinstance(layers, (bytes, dict, set)) or not isinstance(layers, Iterable):
        raise MinibertError(f"{what} must be {FORMS}, an int or a list of ints; got {type(layers).__name__}")
    else:
        indices = list(layers)
        shown = repr(indices)[:40]
    out = [resolve_layer(i, num_states, f"{what} {shown}: index") for i in indices]
    if not out:
        raise MinibertError(f"{what} {shown} selects no layer (valid: 0..{num_states - 1})")
    if len(set(out)) != len(out):
        raise MinibertError(f"{what} {shown} names a layer twice")
    return out
