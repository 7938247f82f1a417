"""Malicious pytorch_model.bin files are refused with one line, and nothing in them runs.

Each payload, if it ran, would create a canary file in tmp_path (``touch``,
``open(..., "w")``, ``subprocess.Popen``); every test proves the canary is
absent after both ``minibert.load`` and ``minibert inspect`` refused the file
(one line naming the file and, for a global, the global), and that the
model directory is unchanged. Layout abuses (an offset past the end, a shape
the storage cannot hold, a claimed 10**9-element storage, a pickle opcode
claiming 2**62 bytes) are refused before anything large is allocated.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BERT
from fuzz_helpers import assert_one_line_error, assert_unchanged, run, run_subprocess, snapshot
from torch_files import (
    Build,
    Call,
    Global,
    PersId,
    Raw,
    assemble,
    emit,
    ordered_dict,
    state_pickle,
    storage_id,
    tensor,
    write_legacy,
    write_zip,
)

import minibert


class Reduce:
    """An object whose pickle calls ``func(*args)`` when loaded: the classic payload."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def touch(canary: Path) -> str:
    return f"touch {canary}"


def one_tensor_storages() -> dict[str, np.ndarray]:
    return {"0": np.arange(10, dtype=np.float32)}


def legit(items: dict) -> bytes:
    """A state dict pickle: the given entries after one well-formed tensor."""
    return assemble(ordered_dict({"w": tensor(storage_id("0", "float32", 10), 0, (10,)), **items}))


#: name -> (how to make data.pkl given the canary path, what the one line must say)
PAYLOADS = {
    "os.system via __reduce__": (lambda c: pickle.dumps(Reduce(os.system, touch(c)), protocol=2), "system"),
    "builtins.eval": (  # protocol 2 names it __builtin__.eval, as Python 2 did
        lambda c: pickle.dumps(Reduce(eval, f"open({str(c)!r}, 'w')"), protocol=2),
        "builtin__.eval",
    ),
    "exec of a code string (protocol 3)": (
        lambda c: pickle.dumps(Reduce(exec, f"open({str(c)!r}, 'w')"), protocol=3),
        "builtins.exec",
    ),
    "payload as a state dict value": (
        lambda c: legit({"x": Call(Global("os", "system"), (touch(c),))}),
        "os.system",
    ),
    "nested GLOBAL inside a tensor's arguments": (
        lambda c: assemble(
            ordered_dict({"w": tensor(Call(Global("posix", "system"), (touch(c),)), 0, (1,))})
        ),
        "posix.system",
    ),
    "subprocess via copyreg._reconstructor": (
        lambda c: assemble(
            Call(
                Global("copyreg", "_reconstructor"),
                (Global("subprocess", "Popen"), Global("builtins", "object"), ["touch", str(c)]),
            )
        ),
        "copyreg._reconstructor",
    ),  # fmt: skip
    "subprocess.Popen directly": (
        lambda c: assemble(Call(Global("subprocess", "Popen"), (["touch", str(c)],))),
        "subprocess.Popen",
    ),
    "STACK_GLOBAL (protocol 4)": (lambda c: pickle.dumps(Reduce(os.system, touch(c)), protocol=4), "system"),
    "INST opcode (protocol 0)": (lambda c: b"(S'" + touch(c).encode() + b"'\nios\nsystem\n.", "os.system"),
    "OBJ opcode": (
        lambda c: b"\x80\x02(cos\nsystem\nX" + struct.pack("<I", len(touch(c))) + touch(c).encode() + b"o.",
        "os.system",
    ),  # fmt: skip
    "a storage type that is a function": (
        lambda c: assemble(
            ordered_dict(
                {
                    "w": tensor(
                        PersId(("storage", Call(Global("os", "system"), (touch(c),)), "0", "cpu", 10)),
                        0,
                        (10,),
                    )
                }
            )
        ),
        "os.system",
    ),  # fmt: skip
    "numpy's _reconstruct": (
        lambda c: assemble(
            Call(Global("numpy.core.multiarray", "_reconstruct"), (Global("numpy", "ndarray"),))
        ),
        "numpy.core.multiarray._reconstruct",
    ),
    "a TorchScript class": (lambda c: assemble(Call(Global("__torch__.Model", "forward"), ())), "__torch__"),
    "torch.load itself": (lambda c: assemble(Call(Global("torch", "load"), (str(c),))), "torch.load"),
}

W = storage_id("0", "float32", 10)  # the one storage of one_tensor_storages(): 10 float32
STATE = ordered_dict({"w": tensor(W, 0, (10,))})  # a well-formed state dict of one tensor
S = one_tensor_storages()
HUGE = struct.pack("<Q", 2**62)
BIG = (10**5000).to_bytes(2100, "little")  # LONG4's bytes of an int that str() refuses
BYTEARRAY_2_40 = b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"x"  # protocol 5: a bytearray of 1 TiB

#: Layout abuses: name -> (data.pkl, storages, what the one line must say)
LAYOUTS = {
    "storage offset past the end": (legit({"v": tensor(W, 1_000_000, (4,))}), S, "does not fit"),
    "a shape that does not fit the storage": (legit({"v": tensor(W, 0, (100, 100))}), S, "does not fit"),
    "strides of 0 claiming 10**12 elements": (
        legit({"v": tensor(W, 0, (10**6, 10**6), (0, 0))}), S, "does not fit",
    ),
    "a 10**9-element claimed storage": (
        assemble(ordered_dict({"w": tensor(storage_id("0", "float32", 10**9), 0, (10**9,))})), S,
        "claims 1,000,000,000 elements",
    ),
    "a negative offset": (legit({"v": tensor(W, -1, (4,))}), S, "storage offset"),
    "a storage named by two dtypes": (
        legit({"v": tensor(storage_id("0", "float16", 10), 0, (4,))}), S, "two dtypes",
    ),
    "a storage key that climbs out": (
        assemble(ordered_dict({"w": tensor(storage_id("../../x", "float32", 10), 0, (10,))})), S,
        "storage key",
    ),
    "BUILD that rewrites a tensor after the checks": (
        legit({"v": Build(tensor(W, 0, (4,)), {"offset": 10**6})}), S, "sets the state",
    ),
    "backward hooks on a tensor": (
        legit({"v": Call(Global("torch._utils", "_rebuild_tensor_v2"), (W, 0, (4,), (1,), False, {"h": 1}))}),
        S, "backward hooks",
    ),
    "an unknown persistent id": (legit({"v": PersId(("module", "x", "y", "z", 1))}), S, "persistent id"),
    "a state dict entry that is not a tensor": (legit({"v": 3}), S, "not a tensor"),
    "a list instead of a state dict": (assemble([1, 2]), {}, "not a state dict"),
    "a storage missing from the archive": (legit({}), {}, "has no member"),
    "an opcode claiming 2**62 bytes": (b"\x80\x04\x8d" + HUGE + b"x", {}, "not a readable"),
    "a truncated pickle": (legit({})[:-30], S, "not a readable"),
    # issue 17: BUILD gives the state dict an attribute that shadows a method minibert calls
    "BUILD that sets the state dict's items to a rebuild function": (
        assemble(Build(STATE, {"items": Global("torch._utils", "_rebuild_parameter")})), S,
        "sets attributes of an OrderedDict",
    ),
    "BUILD that sets the state dict's items to a storage type": (
        assemble(Build(STATE, {"items": Global("torch", "FloatStorage")})), S,
        "sets attributes of an OrderedDict",
    ),
    "BUILD with torch's _metadata and more": (
        assemble(Build(STATE, {"_metadata": {}, "keys": Global("torch._utils", "_rebuild_tensor")})), S,
        "sets attributes of an OrderedDict",
    ),
    "BUILD of slots (setattr) on the state dict": (
        assemble(Build(STATE, (None, {"items": Global("torch._utils", "_rebuild_tensor")}))), S,
        "sets attributes of an OrderedDict",
    ),
    "BUILD that sets __setstate__, then a second BUILD calls it": (
        assemble(Build(Build(STATE, {"__setstate__": Global("torch._utils", "_rebuild_parameter")}), {})), S,
        "sets attributes of an OrderedDict",
    ),
    "BUILD that sets append, then APPENDS calls it": (
        assemble(Raw(emit(Build(STATE, {"extend": Global("torch._utils", "_rebuild_parameter")}))
                     + b"(" + emit(1) + b"e")), S,
        "sets attributes of an OrderedDict",
    ),
    "BUILD that rewrites a rebuild function's defaults": (
        legit({"v": Call(Build(Global("torch._utils", "_rebuild_tensor_v2"),
                               (None, {"__defaults__": (False, None, None)})), (W, 0, (4,), (1,)))}), S,
        "sets the state",
    ),
    "a state dict key that is a tuple nested 100000 deep": (
        legit({Raw(b"(" * 100_000 + b")" + b"t" * 100_000): tensor(W, 0, (4,))}), S,
        "<tuple>, not a tensor name",
    ),
    "a state dict key that is an int of 5000 digits": (
        legit({Raw(b"\x8b" + struct.pack("<i", len(BIG)) + BIG): tensor(W, 0, (4,))}), S,
        "<int>, not a tensor name",
    ),
    "a BYTEARRAY8 of 4 bytes (protocol 5)": (
        b"\x80\x05\x96" + struct.pack("<Q", 4) + b"abcd.", {}, "BYTEARRAY8",
    ),
    "a BYTEARRAY8 claiming 2**40 bytes": (BYTEARRAY_2_40, {}, "not a readable"),
}  # fmt: skip


def model_with(tmp_path: Path, write) -> Path:
    d = tmp_path / "model"
    shutil.copytree(TINY_BERT, d, ignore=shutil.ignore_patterns("model.safetensors"))
    write(d / "pytorch_model.bin")
    return d


def refused(d: Path, canary: Path, *names: str) -> None:
    """load and inspect refuse ``d`` in one line naming ``names``; nothing ran, nothing changed."""
    before = snapshot(d)
    with pytest.raises(minibert.MinibertError) as e:
        minibert.load(d)
    assert "\n" not in str(e.value)
    for name in names:
        assert name in str(e.value), (name, str(e.value))
    assert_one_line_error(run("inspect", "--model", d), "pytorch_model.bin", *names)
    assert not canary.exists(), "the payload ran"
    assert_unchanged(before, d)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("case", list(PAYLOADS))
def test_a_forbidden_global_is_refused_and_never_run(tmp_path, case, legacy):
    make, named = PAYLOADS[case]
    canary = tmp_path / "canary"
    data_pkl = make(canary)
    if legacy:
        d = model_with(tmp_path, lambda p: write_legacy(p, data_pkl, {}))
    else:
        d = model_with(tmp_path, lambda p: write_zip(p, data_pkl, {}))
    refused(d, canary, named)
    assert "refused the global" in str(pytest.raises(minibert.MinibertError, minibert.load, d).value)


def test_the_payloads_would_run(tmp_path):
    """The canary proves something: the same bytes, unpickled by plain pickle, do create it."""
    for case in ("os.system via __reduce__", "payload as a state dict value", "INST opcode (protocol 0)"):
        canary = tmp_path / f"canary-{len(case)}"
        data = PAYLOADS[case][0](canary)
        if case == "payload as a state dict value":  # plain pickle lacks our storages: run only the payload
            data = assemble(Call(Global("os", "system"), (touch(canary),)))
        pickle.loads(data)
        assert canary.exists(), case


@pytest.mark.parametrize("where", ["magic number", "sys_info", "storage key list"])
def test_the_small_pickles_of_the_legacy_format_are_restricted_too(tmp_path, where):
    """The legacy format is five pickles: every one goes through the same allow-list."""
    canary = tmp_path / "canary"
    payload = pickle.dumps(Reduce(os.system, touch(canary)), protocol=2)
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, 2), pickle.dumps(1001, 2), pickle.dumps({}, 2),
             legit({}), pickle.dumps(["0"], 2)]  # fmt: skip
    parts[{"magic number": 0, "sys_info": 2, "storage key list": 4}[where]] = payload
    data = b"".join(parts) + struct.pack("<q", 10) + np.arange(10, dtype=np.float32).tobytes()
    d = model_with(tmp_path, lambda p: p.write_bytes(data))
    refused(d, canary, "system")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("case", list(LAYOUTS))
def test_a_layout_abuse_is_refused_before_allocating(tmp_path, case, legacy):
    data_pkl, storages, named = LAYOUTS[case]
    if legacy:
        if case == "a storage missing from the archive":
            named = "no data for storage"
        elif case == "a 10**9-element claimed storage":
            storages = {"0": (10**9, np.zeros(10, np.float32).tobytes())}  # the count lies too
            named = "past the end of the file"
        d = model_with(tmp_path, lambda p: write_legacy(p, data_pkl, storages))
    else:
        d = model_with(tmp_path, lambda p: write_zip(p, data_pkl, storages))
    refused(d, tmp_path / "canary", named)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_bytearray_too_large_to_allocate_is_one_line_in_a_real_process(tmp_path, legacy):
    """CPython 3.11 prints "SystemError: deallocated bytearray object has exported buffers"
    (straight to the process's stderr) when a BYTEARRAY8 fails to allocate: the opcode is
    refused before the unpickler sees it, so stderr is the one error line."""
    write = write_legacy if legacy else write_zip
    d = model_with(tmp_path, lambda p: write(p, BYTEARRAY_2_40, {}))
    code, _, err = run_subprocess("inspect", "--model", d)
    assert err.count("\n") == 1, err
    assert_one_line_error((code, "", err), "pytorch_model.bin", "not a readable PyTorch checkpoint")


def test_a_build_on_an_allowed_function_changes_nothing(tmp_path):
    """BUILD with slot state would setattr on the global it targets: on a bare function that
    is ``__defaults__``, kept for every later load in the process. The stand-ins refuse it."""
    from minibert.loading import torch_pickle

    defaults = (None, {"__defaults__": (True, {"h": 1}, None)})  # slot state: setattr
    built = Build(Global("torch._utils", "_rebuild_tensor_v2"), defaults)
    data_pkl = legit({"v": Call(built, (W, 0, (4,), (1,)))})
    before = {k: (v, getattr(v, "__defaults__", None)) for k, v in torch_pickle.ALLOWED.items()}
    d = model_with(tmp_path, lambda p: write_zip(p, data_pkl, S))
    refused(d, tmp_path / "canary", "sets the state")
    assert {k: (v, getattr(v, "__defaults__", None)) for k, v in torch_pickle.ALLOWED.items()} == before
    assert torch_pickle._rebuild_tensor_v2.__defaults__ == (False, None, None)


def test_torchs_metadata_build_is_accepted_and_dropped(tmp_path):
    """torch pickles a state dict's ``_metadata`` as a BUILD on the OrderedDict: still read."""
    data_pkl = assemble(Build(STATE, {"_metadata": {"": {"version": 1}}}))
    d = tmp_path / "pytorch_model.bin"
    write_zip(d, data_pkl, S)
    from minibert.loading.torch_pickle import open_torch

    ckpt = open_torch(d)
    np.testing.assert_array_equal(ckpt.read_stored("w"), np.arange(10, dtype=np.float32))
    ckpt.close()


def test_a_legacy_protocol_number_of_5000_digits(tmp_path):
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, 2), pickle.dumps(10**5000, 2)]
    d = model_with(tmp_path, lambda p: p.write_bytes(b"".join(parts)))
    refused(d, tmp_path / "canary", "legacy protocol <int>, expected 1001")


def test_a_legacy_count_that_disagrees_with_the_pickle(tmp_path):
    data_pkl, _ = state_pickle({"w": np.zeros(10, np.float32)}, legacy=True)
    d = model_with(
        tmp_path, lambda p: write_legacy(p, data_pkl, {"0": (11, np.zeros(11, np.float32).tobytes())})
    )
    refused(d, tmp_path / "canary", "holds 11 elements, the pickle says 10")


@pytest.mark.parametrize(
    "content, named",
    [
        (b"", "not a PyTorch checkpoint"),
        (b"GIF89a", "not a PyTorch checkpoint"),
        (b"PK\x03\x04" + b"\0" * 100, "not a valid zip archive"),
        (b"\x80\x02K\x07.", "no torch magic number"),
    ],
)
def test_files_that_are_not_checkpoints(tmp_path, content, named):
    d = model_with(tmp_path, lambda p: p.write_bytes(content))
    refused(d, tmp_path / "canary", named)


def test_a_zip_bomb_member_is_not_read(tmp_path, monkeypatch):
    """A storage member that inflates to 64 MiB but belongs to an ignored tensor: never inflated.
    (The encoder's own storages are read only as far as their tensors reach.)"""
    import zipfile

    from safetensors.numpy import load_file

    d = model_with(tmp_path, lambda p: None)

    tensors = load_file(str(TINY_BERT / "model.safetensors"))
    bomb = np.zeros(16 * 1024**2, np.float32)  # 64 MiB of zeros, ~64 kB deflated
    data_pkl, storages = state_pickle(tensors | {"cls.bomb": bomb})
    bomb_key = str(len(tensors))
    with zipfile.ZipFile(d / "pytorch_model.bin", "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        for key, a in storages.items():
            kind = zipfile.ZIP_DEFLATED if key == bomb_key else zipfile.ZIP_STORED
            z.writestr(f"archive/data/{key}", a.tobytes(), compress_type=kind)
    assert (d / "pytorch_model.bin").stat().st_size < 2_000_000
    opened: list[str] = []
    original = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(str(name)) or
                        original(self, name, *a, **k))  # fmt: skip
    model = minibert.load(d)
    assert "cls.bomb" in model.weights.ignored
    assert f"archive/data/{bomb_key}" not in opened
