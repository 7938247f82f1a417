"""minibert/outputs/safetensors_file.py: the same arrays give the same bytes in every
process, and the safetensors library reads them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from safetensors.numpy import load

from minibert.outputs.safetensors_file import SafetensorsFile, safetensors_bytes

SCRIPT = (
    "import sys, hashlib, numpy as np\n"
    "from minibert.outputs.safetensors_file import safetensors_bytes\n"
    "a = {'x': np.arange(6, dtype=np.float16).reshape(2, 3), 'offsets': np.arange(3)}\n"
    "m = {'settings': '{\"k\": 1}', 'tokens': '[\"a\", \"\\u00e9\"]', 'words': '[\"w\"]'}\n"
    "sys.stdout.write(hashlib.sha256(safetensors_bytes(a, m)).hexdigest())\n"
)


def test_bytes_are_identical_across_processes():
    # the safetensors library writes metadata keys in a per-process random order; ours may not
    digests = {
        subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True).stdout for _ in "ab"
    }
    assert len(digests) == 1 and len(next(iter(digests))) == 64


def test_the_library_and_minibert_read_what_is_written(tmp_path):
    arrays = {"x": np.arange(6, dtype=np.float16).reshape(2, 3), "offsets": np.arange(3, dtype=np.int64)}
    data = safetensors_bytes(arrays, {"settings": "{}", "tokens": '["a"]'})
    back = load(data)
    (tmp_path / "f.safetensors").write_bytes(data)
    ours = SafetensorsFile(tmp_path / "f.safetensors")
    assert ours.metadata == {"settings": "{}", "tokens": '["a"]'}
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and ours[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)
        np.testing.assert_array_equal(ours[k], v)
    np.testing.assert_array_equal(ours.read("x", 1, 2), arrays["x"][1:2])  # rows, read from the file


def test_a_joined_array_is_written_as_its_parts_joined():
    """The bytes of an array kept in parts (a chunk's attention maps) are those of the parts joined."""
    from minibert.outputs.safetensors_file import Joined

    rng = np.random.default_rng(0)
    parts = [rng.random(5).astype(np.float32), np.zeros(0, np.float32), rng.random((2, 3)).astype(np.float32)]
    joined = Joined(parts, np.float32)
    assert joined.shape == (11,) and joined.nbytes == 44
    flat = np.concatenate([p.reshape(-1) for p in parts])
    np.testing.assert_array_equal(np.asarray(joined), flat)
    meta = {"m": "x"}
    assert safetensors_bytes({"a": joined, "b": np.arange(3)}, meta) == safetensors_bytes(
        {"a": flat, "b": np.arange(3)}, meta
    )
    empty = Joined([], np.float16)
    assert safetensors_bytes({"a": empty}, meta) == safetensors_bytes({"a": np.zeros(0, np.float16)}, meta)
