"""minibert.encoder.layers: the one resolver of layer indices (hidden_states[0] = embeddings)."""

from __future__ import annotations

import numpy as np
import pytest

from minibert.encoder.layers import resolve_layer, resolve_layers
from minibert.errors import MinibertError

# A 6-layer model has 7 hidden states: 0 (embeddings) .. 6.
GOOD = [
    (None, [0, 1, 2, 3, 4, 5, 6]),
    ("all", [0, 1, 2, 3, 4, 5, 6]),
    (" all ", [0, 1, 2, 3, 4, 5, 6]),
    ("-1", [6]),
    ("-4,-3,-2,-1", [3, 4, 5, 6]),
    ("0:7", [0, 1, 2, 3, 4, 5, 6]),
    ("1:", [1, 2, 3, 4, 5, 6]),
    ("::2", [0, 2, 4, 6]),
    ("-1:0:-2", [6, 4, 2]),
    ("6,0", [6, 0]),
    (3, [3]),
    (np.int64(-7), [0]),
    ([-1, 0], [6, 0]),
    ((2,), [2]),
    (np.array([1, 2]), [1, 2]),
]


@pytest.mark.parametrize("layers, expected", GOOD, ids=[repr(g[0]) for g in GOOD])
def test_resolve_layers(layers, expected):
    assert resolve_layers(layers, 7) == expected


BAD = [
    ("7", "out of range"),
    ("-8", "out of range"),
    ("1,1", "twice"),
    ("0:0", "selects no layer"),
    ("::0", "step cannot be 0"),
    ("a,b", "expected"),
    ("1:2:3:4", "expected"),
    ("0:99", "out of range"),
    ("", "expected"),
    ([], "selects no layer"),
    ([1.5], "must be an integer"),
    ([True], "must be an integer"),
    (True, "must be"),
    (2.0, "must be"),
    (b"1", "must be"),
    ({1}, "must be"),
]


@pytest.mark.parametrize("layers, message", BAD, ids=[repr(b[0]) for b in BAD])
def test_bad_layers_name_the_argument(layers, message):
    with pytest.raises(MinibertError, match=message) as e:
        resolve_layers(layers, 7, what="--layers")
    assert str(e.value).startswith("--layers")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "spec",
    ["1," * 3000, "9" * 5000, "\udcff"],  # an int past Python's 4300 digits; an undecodable argv byte
    ids=["long list", "huge int", "surrogate"],
)
def test_a_long_or_odd_spec_is_one_short_line(spec):
    with pytest.raises(MinibertError, match="expected") as e:
        resolve_layers(spec, 7, what="--layers")
    assert len(str(e.value)) < 200 and "\n" not in str(e.value)


def test_resolve_one_layer():
    assert resolve_layer(0, 7) == 0 and resolve_layer(-1, 7) == 6 and resolve_layer(-7, 7) == 0
    # encoder layers only (explain, plot): 1..6, and -1..-6
    assert resolve_layer(1, 7, first=1) == 1 and resolve_layer(-6, 7, first=1) == 1
    for bad in (0, 7, -7):
        with pytest.raises(MinibertError, match="--layer .* out of range: valid are 1..6"):
            resolve_layer(bad, 7, "--layer", first=1)
    with pytest.raises(MinibertError, match="must be an integer"):
        resolve_layer("2", 7)
    # an int past Python's 4,300 printable digits: named, not a ValueError from str()
    with pytest.raises(MinibertError, match="layer a huge number is out of range"):
        resolve_layer(10**5000, 7)
    with pytest.raises(MinibertError, match=r"must be an integer, got 'x{39}$"):
        resolve_layer("x" * 10**6, 7)


@pytest.mark.parametrize("impl, trace", [("fast", False), ("plain", False), ("plain", True)])
def test_attention_layers_take_negative_indices_as_the_command_line_does(tiny_model, impl, trace):
    """encode(attention_layers=) follows explain's --layer rule (resolve_layer, first=1):
    -1 is layer L, -L is layer 1; the maps are those of the positive spelling, bit for bit."""
    from conftest import variant
    from numpy.testing import assert_array_equal

    m = variant(tiny_model, impl)
    L = m.num_layers
    texts = ["hello world", "the cat sat on the mat"]
    for negative, positive in (([-1], [L]), ([-L], [1]), ([-1, 1], [L, 1]), ([L, -1], [L])):
        a = m.encode(texts, output_attentions=True, trace=trace, attention_layers=negative)
        b = m.encode(texts, output_attentions=True, trace=trace, attention_layers=positive)
        assert [x is None for x in a.attentions] == [x is None for x in b.attentions], negative
        assert sum(x is not None for x in a.attentions) == len(set(positive))
        for x, y in zip(a.attentions, b.attentions, strict=True):
            if x is not None:
                assert_array_equal(x, y)
    for bad in ([-L - 1], [0], [L + 1]):
        message = rf"attention_layers {bad[0]} is out of range: valid are 1..{L}"
        with pytest.raises(MinibertError, match=message):
            m.encode(texts, output_attentions=True, attention_layers=bad)
