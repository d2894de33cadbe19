"""safetensors reading through the `safetensors` package, and our streaming writer checked
against that package's reader. Files are tiny and built by the package or by hand."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import xmod_jax as xj
from xmod_jax.ckpts import weights
from xmod_jax.ckpts.weights import open_safetensors, read_state_dict, write_safetensors

CORRUPT = "corrupt or truncated safetensors file"
DTYPES = {
    "U16": np.uint16,
    "U32": np.uint32,
    "U64": np.uint64,
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
    "U8": np.uint8,
    "BOOL": np.bool_,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F32": np.float32,
    "F64": np.float64,
}


def random_tensor(dtype, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values spread over the dtype's range (integers up to its extremes)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.normal(size=shape) * 100).astype(dtype)


def write_raw(path, header: dict, data: bytes) -> None:
    """A safetensors file by hand: 8-byte little-endian header length, JSON header, data."""
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + data)


def f32(begin: int, end: int, shape: list[int]) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


def f32_data(size: int) -> bytes:
    """`size` bytes: float32 0, 1, 2, ... then zero padding."""
    return np.arange(size // 4, dtype="<f4").tobytes() + bytes(size % 4)


SOUND = {"a": f32(0, 8, [2]), "b": f32(8, 12, [1])}
# (header, data size): each is `SOUND` with one defect.
MALFORMED = {
    "overlapping-offsets": ({"a": f32(0, 8, [2]), "b": f32(4, 8, [1])}, 8),
    "gap-between-tensors": ({"a": f32(0, 8, [2]), "b": f32(12, 16, [1])}, 16),
    "trailing-bytes": (SOUND, 16),
    "negative-dimensions": ({"a": f32(0, 8, [2]), "b": f32(8, 12, [-1, -1])}, 12),
    "offsets-past-the-end": (SOUND, 10),
    "size-not-the-shape": ({"a": f32(0, 8, [3]), "b": f32(8, 12, [1])}, 12),
    "unknown-dtype": ({"a": {**f32(0, 8, [2]), "dtype": "F33"}, "b": f32(8, 12, [1])}, 12),
}


def test_a_hand_built_file_reads(tmp_path):
    # The control for the malformed files below: the builder itself makes valid files.
    write_raw(tmp_path / "model.safetensors", SOUND, f32_data(12))
    state = read_state_dict(str(tmp_path))
    np.testing.assert_array_equal(state["a"], np.array([0, 1], np.float32))
    np.testing.assert_array_equal(state["b"], np.array([2], np.float32))


@pytest.mark.parametrize("defect", MALFORMED)
def test_malformed_files_are_refused_naming_the_file(defect, tmp_path):
    header, size = MALFORMED[defect]
    write_raw(tmp_path / "model.safetensors", header, f32_data(size))
    with pytest.raises(xj.CheckpointError, match=CORRUPT) as err:
        read_state_dict(str(tmp_path))
    assert str(tmp_path / "model.safetensors") in str(err.value)


@pytest.mark.parametrize("data", [b"", b"\x07\x00", b"\x00" * 64, b"\xff" * 8 + b"{}"])
def test_files_too_short_or_with_a_bad_header_length_are_refused(data, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    with pytest.raises(xj.CheckpointError, match=CORRUPT) as err:
        open_safetensors(str(path))
    assert str(path) in str(err.value)


def test_an_unreadable_path_is_reported(tmp_path):
    with pytest.raises(xj.CheckpointError, match="cannot read") as err:
        open_safetensors(str(tmp_path / "absent.safetensors"))
    assert "absent.safetensors" in str(err.value)


def test_files_of_every_dtype_saved_by_the_package_load(tmp_path):
    tensors = {
        f"t.{code}": random_tensor(dtype, (3, 4), seed=i)
        for i, (code, dtype) in enumerate(DTYPES.items())
    }
    tensors["scalar"] = np.array(-2.5, np.float64)
    tensors["empty"] = np.zeros((0, 5), np.uint32)
    save_file(tensors, tmp_path / "model.safetensors")
    with safe_open(tmp_path / "model.safetensors", framework="numpy") as f:
        codes = {k: f.get_slice(k).get_dtype() for k in f.keys() if k.startswith("t.")}
    assert codes == {f"t.{code}": code for code in DTYPES}  # the file holds every code
    state = read_state_dict(str(tmp_path))
    assert set(state) == set(tensors)
    for key, want in tensors.items():
        got = state[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
    assert state["t.BF16"].dtype == np.dtype(ml_dtypes.bfloat16)


def test_float8_tensors_are_refused_naming_tensor_and_dtype(tmp_path):
    # safetensors' numpy reader asks numpy (not ml_dtypes) for float8, which numpy lacks.
    tensors = {
        "w": np.zeros(4, np.float32),
        "q": np.ones(4, np.float32).astype(ml_dtypes.float8_e4m3fn),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(xj.CheckpointError, match=r"q \(F8_E4M3\)") as err:
        read_state_dict(str(tmp_path))
    assert str(tmp_path / "model.safetensors") in str(err.value)


def _specs(tensors: dict[str, np.ndarray]) -> list:
    return [(k, v.dtype, v.shape, lambda v=v: v) for k, v in tensors.items()]


@pytest.mark.parametrize("code", DTYPES)
def test_our_writer_output_reads_back_identically_with_the_package(code, tmp_path):
    dtype = DTYPES[code]
    tensors = {
        "matrix": random_tensor(dtype, (5, 3), seed=1),
        "vector": random_tensor(dtype, (7,), seed=2),
        "scalar": random_tensor(dtype, (), seed=3),
        "empty": np.zeros((0, 2), dtype),
    }
    path = tmp_path / "model.safetensors"
    write_safetensors(str(path), _specs(tensors))
    loaded = load_file(path)
    with safe_open(path, framework="numpy") as f:
        codes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
        opened = {k: f.get_tensor(k) for k in f.keys()}
        assert f.metadata() == {"format": "pt"}
    assert codes == {}.fromkeys(tensors, code)
    for theirs in (loaded, opened):
        assert set(theirs) == set(tensors)
        for key, want in tensors.items():
            assert theirs[key].dtype == want.dtype and theirs[key].shape == want.shape, key
            np.testing.assert_array_equal(theirs[key], want, err_msg=key)


def test_our_writer_refuses_a_dtype_the_reader_cannot_return(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = {"ok": np.zeros(2, np.float32), "q": np.zeros(2, ml_dtypes.float8_e4m3fn)}
    with pytest.raises(ValueError, match="'q' of dtype float8_e4m3fn"):
        write_safetensors(str(path), _specs(tensors))
    assert not path.exists()


@pytest.fixture
def handle_log(monkeypatch):
    """Every open, tensor read and close of a `safe_open` handle made by `weights`."""
    log: list = []

    class Recording:
        def __init__(self, path, framework):
            self._inner = safe_open(path, framework=framework)
            log.append("open")

        def keys(self):
            return self._inner.keys()

        def get_slice(self, key):
            return self._inner.get_slice(key)

        def get_tensor(self, key):
            log.append(key)
            return self._inner.get_tensor(key)

        def __exit__(self, *exc):
            log.append("close")
            return self._inner.__exit__(*exc)

    monkeypatch.setattr(weights, "safe_open", Recording)
    return log


def _save_four(tmp_path) -> dict[str, np.ndarray]:
    tensors = {k: random_tensor(np.float32, (10, 10), seed=i) for i, k in enumerate("abcd")}
    save_file(tensors, tmp_path / "model.safetensors")
    return tensors


def test_a_lookup_reads_only_that_tensor(handle_log, tmp_path):
    tensors = _save_four(tmp_path)
    state = read_state_dict(str(tmp_path))
    assert handle_log == ["open"]  # the header is checked, no tensor read
    assert "c" in state and "z" not in state and len(state) == 4 and sorted(state) == list("abcd")
    renamed = state.renamed({"x": "c"})
    assert handle_log == ["open"]
    np.testing.assert_array_equal(renamed["x"], tensors["c"])
    assert handle_log == ["open", "c"]
    np.testing.assert_array_equal(state["a"], tensors["a"])
    assert handle_log == ["open", "c", "a"]


def test_one_handle_serves_a_group_of_tensors_then_closes(handle_log, tmp_path):
    tensors = _save_four(tmp_path)
    nbytes = tensors["a"].nbytes
    readers = open_safetensors(str(tmp_path / "model.safetensors"), handle_bytes=3 * nbytes)
    for key in "abcda":
        np.testing.assert_array_equal(readers[key](), tensors[key])
    # One header parse per three tensors, and the mapping is released after each group.
    assert handle_log == ["open", "a", "b", "c", "close", "open", "d", "a"]


def test_arrays_outlive_their_handle(tmp_path):
    tensors = _save_four(tmp_path)
    readers = open_safetensors(str(tmp_path / "model.safetensors"), handle_bytes=1)
    got = {k: readers[k]() for k in "abcd"}  # every read closes its handle
    for key, want in tensors.items():
        got[key] += 1  # writable, own memory
        np.testing.assert_array_equal(got[key], want + 1)


def _save_sharded(folder, shards: list[dict[str, np.ndarray]]) -> None:
    weight_map = {}
    for i, part in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(part, folder / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def test_sharded_files_read_as_one_state_dict(tmp_path):
    shards = [
        {"a": random_tensor(np.float32, (3, 2), 0), "b": random_tensor(np.int64, (4,), 1)},
        {"c": random_tensor(ml_dtypes.bfloat16, (2, 2), 2)},
        {"d": random_tensor(np.uint16, (5,), 3), "e": random_tensor(np.bool_, (2,), 4)},
    ]
    _save_sharded(tmp_path, shards)
    state = read_state_dict(str(tmp_path))
    want = {k: v for part in shards for k, v in part.items()}
    assert sorted(state) == sorted(want)
    for key, value in want.items():
        assert state[key].dtype == value.dtype, key
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_a_tensor_in_two_shards_is_refused(tmp_path):
    first = {"a": np.zeros(2, np.float32), "b": np.zeros(1, np.float32)}
    _save_sharded(tmp_path, [first, {"a": np.ones(2, np.float32)}])  # the index lists both files
    with pytest.raises(xj.CheckpointError, match=r"also stored in another shard: \['a'\]"):
        read_state_dict(str(tmp_path))


def test_a_damaged_shard_is_named(tmp_path):
    _save_sharded(tmp_path, [{"a": np.zeros(2, np.float32)}, {"b": np.ones(2, np.float32)}])
    victim = tmp_path / "model-00002-of-00002.safetensors"
    victim.write_bytes(victim.read_bytes()[:-3])
    with pytest.raises(xj.CheckpointError, match=CORRUPT) as err:
        read_state_dict(str(tmp_path))
    assert str(victim) in str(err.value)
