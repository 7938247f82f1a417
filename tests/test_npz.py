"""minibert/outputs/npz.py: an .npz read member by member, each checked from its
header before it is read. (Damaged archives through the command line:
test_fuzz_io.py::test_damaged_output.)"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from minibert import MinibertError
from minibert.outputs.npz import MAX_RATIO, NpzArrays


def test_members_are_read_only_when_asked(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, small=np.arange(3), big=np.ones((1000, 8), np.float32))
    arrays = NpzArrays(path)
    assert sorted(arrays) == ["big", "small"] and len(arrays) == 2
    assert arrays.header("big") == (np.dtype(np.float32), (1000, 8))  # from the header alone
    np.testing.assert_array_equal(arrays["small"], np.arange(3))
    assert list(arrays._cache) == ["small"]  # "big" was never read
    with pytest.raises(KeyError):
        arrays["missing"]


def test_python_objects_are_never_loaded(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, objs=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MinibertError, match="holds Python objects"):
        NpzArrays(path)


def test_a_member_that_expands_too_much_is_not_read(tmp_path):
    path = tmp_path / "bomb.npz"
    n = 17 << 20  # past the floor below which any ratio is allowed
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z, z.open("zeros.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n,)})
        f.write(bytes(n))
    info = zipfile.ZipFile(path).infolist()[0]
    assert info.file_size > MAX_RATIO * info.compress_size  # the archive is what the test means
    with pytest.raises(MinibertError, match="zip bomb"):
        NpzArrays(path)
