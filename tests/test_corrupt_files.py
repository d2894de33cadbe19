"""Corrupt files, generated: every variant is refused with a named error or loads identically.

Variants are generated from intact files of every kind a folder holds: safetensors weights
(truncated at every section boundary, header bytes flipped, offsets that overlap or leave gaps,
trailing bytes, wrong dtypes and shapes), `config.json` (truncated, not JSON, wrong types,
missing fields, another model_type), orbax params folders (array files deleted or truncated, a
config that does not describe the arrays) and tokenizer files (truncated or garbage
sentencepiece models, broken `tokenizer_config.json` and `tokenizer.json`).

A variant passes when loading raises a `CheckpointError` (or a plain `ValueError`) whose message
names the folder or file, or when it loads exactly what the intact folder loads. A raw IndexError,
KeyError, struct.error, TypeError, a crash, or a model that differs fails. Bytes inside tensor data
and inside sentencepiece pieces are not flipped: neither format has checksums, so such a file is
a valid file of another model. `@pytest.mark.slow` tests run the exhaustive versions.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable

import jax
import numpy as np
import pytest
from helpers import hf_config, make_corpus, require_torch, torch, train_tokenizer, transformers
from safetensors.numpy import load_file, save_file

import xmod_jax as xj
from xmod_jax.ckpts.mapping import iter_leaves

Variant = tuple[str, bytes]
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
SPM = "sentencepiece.bpe.model"
TOKENIZER_CONFIG = "tokenizer_config.json"


# ------------------------------------------------------------------------------------- oracle
def check_variants(
    variants: Iterable[tuple[str, Callable[[], None]]],
    load: Callable[[], object],
    same: Callable[[object], str],
    folder,
) -> dict[str, list[str]]:
    """Apply each variant, load, and classify: "refused" (a named error) or "identical".
    Returns the variant names by outcome.

    Everything else is collected and reported at the end, all failures at once; the tally is
    printed (`pytest -s -p no:xdist` shows how many variants each family tries).
    """
    outcomes: dict[str, list[str]] = {"refused": [], "identical": []}
    failures = []
    variants = list(variants)
    for name, apply in variants:
        apply()
        try:
            result = load()
        except ValueError as e:  # CheckpointError is one
            named = isinstance(e, xj.CheckpointError) or type(e) is ValueError
            if named and str(folder) in str(e):
                outcomes["refused"].append(name)
            else:
                failures.append(f"{name}: unnamed {type(e).__name__}: {str(e)[:200]}")
            continue
        except Exception as e:  # noqa: BLE001 - the point is to catch what should not happen
            failures.append(f"{name}: raw {type(e).__name__}: {str(e)[:200]}")
            continue
        difference = same(result)
        if difference:
            failures.append(f"{name}: loaded something else ({difference})")
        else:
            outcomes["identical"].append(name)
    assert not failures, f"{len(failures)} bad outcomes:\n" + "\n".join(failures[:40])
    tally = {outcome: len(names) for outcome, names in outcomes.items()}
    print(f"\n{len(variants)} variants ({variants[0][0]} ...): {tally}")
    return outcomes


def params_difference(got, want) -> str:
    """'' when two params trees hold the same leaves, dtypes and values, else the first culprit."""
    have, need = dict(iter_leaves(got)), dict(iter_leaves(want))
    if have.keys() != need.keys():
        return f"leaves {sorted(have.keys() ^ need.keys())[:3]}"
    for path, leaf in need.items():
        mine = np.asarray(have[path])
        if mine.dtype != leaf.dtype or mine.shape != leaf.shape or not np.array_equal(mine, leaf):
            return "/".join(path)
    return ""


def write(path, data: bytes) -> None:
    """Replace `path` by a new file (a new inode: readers of the old one are not disturbed)."""
    tmp = f"{path}.variant"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def writing(path, variants: Iterable[Variant]) -> list[tuple[str, Callable[[], None]]]:
    return [(name, lambda data=data: write(path, data)) for name, data in variants]


def truncations(data: bytes, cuts: Iterable[int]) -> list[Variant]:
    return [(f"cut@{c}", data[:c]) for c in sorted(set(cuts)) if 0 <= c < len(data)]


# ------------------------------------------------------------------------ safetensors variants
def parse_safetensors(data: bytes) -> tuple[int, dict]:
    size = int.from_bytes(data[:8], "little")
    return size, json.loads(data[8 : 8 + size])


def safetensors_file(header: dict | str, payload: bytes, pad: bool = True) -> bytes:
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + payload


def tensor_entries(header: dict) -> list[tuple[str, dict]]:
    """(name, entry) of every tensor, in data order."""
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    return sorted(entries, key=lambda kv: kv[1]["data_offsets"][0])


def safetensors_truncations(data: bytes) -> list[Variant]:
    """Cuts inside the 8-byte length, inside the header, and at each tensor's start, middle
    and end."""
    size, header = parse_safetensors(data)
    cuts = [0, 1, 4, 7, 8, 9, 8 + size // 2, 8 + size - 1, 8 + size]
    for _, entry in tensor_entries(header):
        begin, end = entry["data_offsets"]
        cuts += [8 + size + begin, 8 + size + (begin + end) // 2, 8 + size + end]
    return truncations(data, cuts)


def length_field_variants(data: bytes) -> list[Variant]:
    size, _ = parse_safetensors(data)
    values = [0, 1, size - 1, size + 1, size + 8, len(data) - 8, len(data), 2**63, 2**64 - 1]
    out = [(f"length={v}", v.to_bytes(8, "little") + data[8:]) for v in values]
    for i in range(8):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        out.append((f"length-byte{i}^1", bytes(flipped)))
    return out


def header_flips(data: bytes, stride: int, masks: tuple[int, ...]) -> list[Variant]:
    """One header byte XOR-ed with each mask, every `stride` bytes."""
    size, _ = parse_safetensors(data)
    out = []
    for position in range(8, 8 + size, stride):
        for mask in masks:
            flipped = bytearray(data)
            flipped[position] ^= mask
            out.append((f"header@{position}^{mask:#x}", bytes(flipped)))
    return out


def layout_variants(data: bytes) -> list[Variant]:
    """Overlapping and gapped offsets, trailing bytes and malformed entries, in a re-serialized
    header (so the JSON stays valid and the safetensors checks are what is tested)."""
    size, header = parse_safetensors(data)
    payload = data[8 + size :]
    entries = tensor_entries(header)
    out: list[Variant] = []

    def edited(name: str, change: Callable[[dict], None], extra: bytes = b"") -> None:
        copy = json.loads(json.dumps(header))
        change(copy)
        out.append((name, safetensors_file(copy, payload + extra)))

    def shift(key: str, delta_begin: int, delta_end: int) -> Callable[[dict], None]:
        def change(h: dict) -> None:
            h[key]["data_offsets"] = [
                h[key]["data_offsets"][0] + delta_begin,
                h[key]["data_offsets"][1] + delta_end,
            ]

        return change

    def set_field(key: str, field: str, value) -> Callable[[dict], None]:
        def change(h: dict) -> None:
            if value is None:
                del h[key][field]
            else:
                h[key][field] = value

        return change

    for i, (key, _) in enumerate(entries):
        if i:  # overlaps the previous tensor, leaves a gap before the next
            edited(f"overlap-{key}", shift(key, -4, -4))
        edited(f"gap-{key}", shift(key, 4, 4))  # gap before, overlap after (or past the end)
        edited(f"grow-{key}", shift(key, 0, 4))
        edited(f"shrink-{key}", shift(key, 0, -4))
    first, last = entries[0][0], entries[-1][0]
    begin, end = entries[1][1]["data_offsets"]
    edited("same-bytes-as-neighbour", set_field(first, "data_offsets", [begin, end]))
    edited(
        "reversed-offsets", set_field(first, "data_offsets", entries[0][1]["data_offsets"][::-1])
    )
    edited("negative-offsets", set_field(first, "data_offsets", [-4, 0]))
    edited("offsets-as-strings", set_field(first, "data_offsets", ["0", "4"]))
    edited("one-offset", set_field(first, "data_offsets", [0]))
    edited("no-offsets", set_field(first, "data_offsets", None))
    edited("no-dtype", set_field(first, "dtype", None))
    edited("no-shape", set_field(first, "shape", None))
    edited("negative-shape", set_field(first, "shape", [-1, *entries[0][1]["shape"][1:]]))
    edited("float-shape", set_field(first, "shape", [float(s) for s in entries[0][1]["shape"]]))
    edited("unknown-entry-field", set_field(first, "checksum", "abc"))
    edited("metadata-not-a-dict", lambda h: h.__setitem__("__metadata__", ["pt"]))
    edited("metadata-int-value", lambda h: h.__setitem__("__metadata__", {"format": 1}))
    edited("no-metadata", lambda h: h.pop("__metadata__", None))  # transformers' own is "pt"
    edited("tensor-entry-not-a-dict", lambda h: h.__setitem__(last, [1, 2]))
    edited("re-serialized", lambda h: None)  # the control: loads identically
    for extra in (1, 4, 8, 4096):
        edited(f"trailing-{extra}", lambda h: None, extra=b"\0" * extra)
    shifted = json.loads(json.dumps(header))
    for _, entry in tensor_entries(shifted):
        entry["data_offsets"] = [o + 8 for o in entry["data_offsets"]]
    out.append(("gap-at-start", safetensors_file(shifted, b"\0" * 8 + payload)))
    text = json.dumps(header)
    duplicate = text[:-1] + f', "{first}": {json.dumps(header[last])}' + "}"
    out.append(("duplicate-json-key", safetensors_file(duplicate, payload)))
    out.append(("unpadded-header", safetensors_file(header, payload, pad=False)))
    out.append(("leading-spaces", safetensors_file("   " + text, payload)))
    for name, raw in (("array", "[]"), ("string", '"x"'), ("number", "1"), ("null", "null")):
        out.append((f"header-{name}", safetensors_file(raw, payload)))
    out.append(("empty-header", safetensors_file("", payload, pad=False)))
    return out


def retagged_dtypes(data: bytes) -> list[Variant]:
    """The dtype tag of one float32 tensor replaced, data unchanged (same or wrong size)."""
    size, header = parse_safetensors(data)
    payload = data[8 + size :]
    key = next(k for k, v in tensor_entries(header) if len(v["shape"]) == 2)
    out = []
    for code in (
        "F16",
        "BF16",
        "F64",
        "I32",
        "U32",
        "I64",
        "I16",
        "U8",
        "I8",
        "BOOL",
        "F8_E4M3",
        "C64",
        "XYZ",
        "",
    ):
        copy = json.loads(json.dumps(header))
        copy[key]["dtype"] = code
        out.append((f"tag-{key}-{code or 'empty'}", safetensors_file(copy, payload)))
    return out


def rewritten_tensors(state: dict[str, np.ndarray], tmp) -> tuple[list[Variant], list[Variant]]:
    """Valid files whose tensors have the wrong dtype class or shape (refused), and files of
    other float widths (loaded as those values)."""
    key = "encoder.layer.0.attention.self.query.weight"
    adapter = "encoder.layer.0.output.adapter_modules.de_DE.dense1.weight"
    refused, widths = [], []

    def save(name: str, changes: dict[str, np.ndarray], into: list) -> None:
        path = tmp / f"{name}.safetensors"
        save_file({**state, **changes}, str(path), metadata={"format": "pt"})
        into.append((name, path.read_bytes()))

    for dtype in (np.int32, np.int64, np.int8, np.uint8, np.bool_):
        save(f"data-{np.dtype(dtype)}", {key: state[key].astype(dtype)}, refused)
    for name, tensor in (
        ("flat", state[key].reshape(-1)),
        ("leading-1", state[key][None]),
        ("transposed", state[adapter].T),
        ("one-row-less", state[key][:-1]),
        ("scalar", np.float32(1.0)),
    ):
        target = adapter if name == "transposed" else key
        save(f"shape-{name}", {target: np.asarray(tensor)}, refused)
    smaller = {k: v for k, v in state.items() if k != key}
    save_file(smaller, str(tmp / "missing.safetensors"), metadata={"format": "pt"})
    refused.append(("missing-tensor", (tmp / "missing.safetensors").read_bytes()))
    save(
        "extra-tensor",
        {"encoder.layer.0.attention.self.rotary.weight": np.ones(3, np.float32)},
        refused,
    )
    for dtype in (np.float16, np.float64):
        save(f"width-{np.dtype(dtype)}", {k: v.astype(dtype) for k, v in state.items()}, widths)
    return refused, widths


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    require_torch()
    """A transformers XmodModel without pooler (every tensor is required: none may be
    re-initialised), its folder, file bytes and our params loaded from it."""
    torch.manual_seed(0)
    reference = transformers.XmodModel(hf_config(num_hidden_layers=1), add_pooling_layer=False)
    folder = tmp_path_factory.mktemp("intact")
    reference.save_pretrained(folder)
    _, params = xj.XmodModel.from_pretrained(folder, add_pooling_layer=False)
    params = jax.tree.map(np.asarray, params)
    return folder, (folder / WEIGHTS).read_bytes(), params


@pytest.fixture
def workdir(weights, tmp_path):
    folder, _, _ = weights
    work = tmp_path / "work"
    shutil.copytree(folder, work)
    return work


def load_weights(folder) -> Callable[[], object]:
    return lambda: xj.XmodModel.from_pretrained(folder, add_pooling_layer=False)[1]


def same_as(params) -> Callable[[object], str]:
    return lambda got: params_difference(got, params)


def run_weights(variants: list[Variant], weights, workdir) -> dict[str, list[str]]:
    _, _, params = weights
    return check_variants(
        writing(workdir / WEIGHTS, variants), load_weights(workdir), same_as(params), workdir
    )


# ------------------------------------------------------------------------ safetensors tests
def test_safetensors_truncated_at_every_boundary(weights, workdir):
    variants = safetensors_truncations(weights[1])
    assert len(variants) >= 60
    assert not run_weights(variants, weights, workdir)["identical"]


def test_safetensors_length_field(weights, workdir):
    run_weights(length_field_variants(weights[1]), weights, workdir)


def test_safetensors_header_bytes_flipped(weights, workdir):
    variants = header_flips(weights[1], stride=61, masks=(0x01, 0x80))
    assert len(variants) >= 100
    run_weights(variants, weights, workdir)


@pytest.mark.slow
def test_safetensors_every_header_byte_flipped(weights, workdir):
    variants = header_flips(weights[1], stride=1, masks=(0x01, 0x80))
    run_weights(variants, weights, workdir)


def test_safetensors_layouts(weights, workdir):
    variants = layout_variants(weights[1])
    loaded = run_weights(variants, weights, workdir)["identical"]
    harmless = {"re-serialized", "no-metadata", "unknown-entry-field", "unpadded-header"}
    assert set(loaded) <= harmless | {"leading-spaces"}, loaded


def test_safetensors_wrong_dtypes_and_shapes(weights, workdir, tmp_path):
    folder, data, params = weights
    variants = retagged_dtypes(data)
    refused, widths = rewritten_tensors(load_file(str(folder / WEIGHTS)), tmp_path)
    assert not run_weights(variants + refused, weights, workdir)["identical"]
    for name, file in widths:  # float widths are conversions: the values of that width
        write(workdir / WEIGHTS, file)
        dtype = np.dtype(name.removeprefix("width-"))
        want = jax.tree.map(lambda x, d=dtype: x.astype(d).astype(x.dtype), params)
        assert not params_difference(load_weights(workdir)(), want), name


# ----------------------------------------------------------------------------- config.json
def config_variants(text: str) -> list[Variant]:
    data = json.loads(text)
    raw = text.encode()
    out = truncations(raw, [0, 1, 2, len(raw) - 1, len(raw) - 2, *range(0, len(raw), 97)])
    for name, body in (
        ("binary", b"\x00\xff" * 20),
        ("object-open", b"{"),
        ("array", b"[1, 2]"),
        ("null", b"null"),
        ("number", b"42"),
        ("string", b'"xmod"'),
        ("trailing-garbage", raw + b"}x"),
        ("utf16", text.encode("utf-16")),
        ("latin1-junk", b'{"model_type": "xmod", "x": "\xe9"}'),
    ):
        out.append((f"not-json-{name}", body))

    def with_value(key, value) -> bytes:
        return json.dumps({**data, key: value}).encode()

    for key in sorted(data):
        for label, value in (("str", "32"), ("float", 32.5), ("list", [1]), ("null", None)):
            if data[key] != value:
                out.append((f"type-{key}-{label}", with_value(key, value)))
        removed = {k: v for k, v in data.items() if k != key}
        out.append((f"missing-{key}", json.dumps(removed).encode()))
    for value in ("bert", "roberta", "xlm-roberta", "XMOD", "", None, 5):
        out.append((f"model_type-{value!r}", with_value("model_type", value)))
    for key, value in (
        ("hidden_size", True),
        ("pre_norm", "false"),
        ("ln_before_adapter", 1),
        ("layer_norm_eps", "1e-5"),
        ("hidden_act", ["gelu"]),
        ("label2id", 5),
        ("id2label", {"a": "x"}),
        ("languages", "en_XX"),
        ("languages", []),
        ("eos_token_id", ["x"]),
        ("vocab_size", 0),
        ("num_attention_heads", 5),
        ("pad_token_id", 99),
    ):
        out.append((f"value-{key}-{value!r}", with_value(key, value)))
    return out


def test_config_json_variants(weights, workdir):
    _, _, params = weights
    text = (workdir / CONFIG).read_text()
    stored = json.loads(text)
    variants = config_variants(text)
    assert len(variants) >= 150

    def same(loaded) -> str:
        return params_difference(loaded, params)

    outcomes = check_variants(
        writing(workdir / CONFIG, variants), load_weights(workdir), same, workdir
    )
    # What loads: a missing key (transformers' default applies), file metadata, a value of the
    # right type, or the file without its final newline.
    valid = {f"type-{k}-{v}" for k, v in (("layer_norm_eps", "float"), ("eos_token_id", "list"))}
    valid |= {"type-initializer_range-float"}
    valid |= {f"type-{k}-null" for k in ("bos_token_id", "eos_token_id", "architectures")}
    metadata = ("dtype", "transformers_version")
    for name in outcomes["identical"]:
        assert (
            name.startswith("missing-")
            or name in valid
            or name.startswith(tuple(f"type-{k}-" for k in metadata))
            or name == f"cut@{len(text.encode()) - 1}"
        ), name
    # What loads is read as written: no string taken for a flag or a number.
    flags = ("pre_norm", "ln_before_adapter", "tie_word_embeddings", "adapter_layer_norm")
    wrong = [(key, value) for key in flags for value in ("false", "true", 0, 1)]
    wrong += [("layer_norm_eps", "1e-5"), ("layer_norm_eps", True), ("hidden_size", True)]
    for key, value in wrong:
        write(workdir / CONFIG, json.dumps({**stored, key: value}).encode())
        with pytest.raises(xj.CheckpointError, match=f"{key} must be"):
            xj.XmodConfig.from_pretrained(workdir)


# ------------------------------------------------------------------------------ orbax folders
@pytest.fixture(scope="module")
def orbax(weights, tmp_path_factory):
    """An orbax params folder converted from the intact weights, and the params it loads."""
    folder, _, _ = weights
    dst = tmp_path_factory.mktemp("orbax") / "model"
    xj.ckpts.hf_to_flax(str(folder), str(dst), progress=False)
    _, params = xj.XmodModel.from_pretrained(dst)
    return dst, jax.tree.map(np.asarray, params)


def orbax_file_variants(folder, ops: tuple[str, ...]) -> list[tuple[str, Callable]]:
    """For each file under params/: deleted, emptied, cut in half, or one byte short."""
    files = sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder / "params")
        for name in names
    )
    variants = []
    for rel in files:
        for op in ops:
            variants.append((f"{op}-{rel}", (rel, op)))
    return variants


def run_orbax_files(orbax, tmp_path, ops: tuple[str, ...]) -> dict[str, list[str]]:
    src, params = orbax
    work = tmp_path / "model"

    def apply(rel: str, op: str) -> None:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work)
        path = work / rel
        data = path.read_bytes()
        if op == "delete":
            path.unlink()
        else:
            write(path, {"empty": b"", "half": data[: len(data) // 2], "short": data[:-1]}[op])

    variants = [
        (name, lambda rel=rel, op=op: apply(rel, op))
        for name, (rel, op) in orbax_file_variants(src, ops)
    ]
    assert len(variants) >= 8 * len(ops)
    load = lambda: xj.XmodModel.from_pretrained(work)[1]  # noqa: E731
    return check_variants(variants, load, same_as(params), work)


# orbax leaves the read coroutines of a refused folder to the garbage collector, which reports them
ORBAX_LEFTOVERS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@ORBAX_LEFTOVERS
def test_orbax_array_files_deleted_or_truncated(orbax, tmp_path):
    run_orbax_files(orbax, tmp_path, ("delete", "half"))


@ORBAX_LEFTOVERS
@pytest.mark.slow
def test_orbax_array_files_every_damage(orbax, tmp_path):
    run_orbax_files(orbax, tmp_path, ("delete", "empty", "half", "short"))


ORBAX_CONFIG_EDITS = {
    "one-more-language": {"languages": ["en_XX", "de_DE", "fr_XX", "sw_KE"]},
    "one-language-less": {"languages": ["en_XX", "de_DE"]},
    "hidden-size": {"hidden_size": 48},
    "vocab-size": {"vocab_size": 100},
    "fewer-layers": {"num_hidden_layers": 0},
    "more-layers": {"num_hidden_layers": 2},
    "ffn-size": {"intermediate_size": 36},
    "heads": {"num_attention_heads": 8},
    "adapter-size": {"adapter_reduction_factor": 4},
    "positions": {"max_position_embeddings": 41},
    "token-types": {"type_vocab_size": 1},
    "adapter-layer-norm": {"adapter_layer_norm": True},
    "pre-norm": {"pre_norm": True},
    "no-config": None,
}


@ORBAX_LEFTOVERS
def test_orbax_config_mismatch(orbax, tmp_path):
    src, params = orbax
    work = tmp_path / "model"
    shutil.copytree(src, work)
    stored = json.loads((src / CONFIG).read_text())

    def apply(edit) -> None:
        if edit is None:
            (work / CONFIG).unlink(missing_ok=True)
        else:
            write(work / CONFIG, json.dumps({**stored, **edit}).encode())

    variants = [(name, lambda e=edit: apply(e)) for name, edit in ORBAX_CONFIG_EDITS.items()]
    load = lambda: xj.XmodModel.from_pretrained(work)[1]  # noqa: E731
    assert not check_variants(variants, load, same_as(params), work)["identical"]


# ------------------------------------------------------------------------------ tokenizer files
@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer = train_tokenizer(folder)
    return folder, tokenizer


SAMPLE = make_corpus(40)


def tokenizer_difference(got, want) -> str:
    if len(got) != len(want) or got.model_max_length != want.model_max_length:
        return f"{len(got)} ids, max length {got.model_max_length}"
    if got.convert_ids_to_tokens(range(len(want))) != want.convert_ids_to_tokens(range(len(want))):
        return "pieces"
    if any(got.encode(t) != want.encode(t) for t in SAMPLE):
        return "encodings"
    return ""


def protobuf_boundaries(data: bytes) -> list[int]:
    """Offsets of every top-level field of a protobuf message, and of each field's middle."""
    offsets, pos = [], 0
    while pos < len(data):
        start = pos
        key = data[pos]
        pos += 1
        size, shift = 0, 0
        while True:  # the length varint of a length-delimited field (all top-level ones are)
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        assert key & 7 == 2, key
        offsets += [start, start + 1, pos + size // 2]
        pos += size
    return offsets


def spm_variants(data: bytes, every_boundary: bool) -> list[Variant]:
    cuts = protobuf_boundaries(data)
    if not every_boundary:  # the specs at the end, and every 7th piece
        cuts = cuts[::7] + cuts[-9:]
    out = truncations(data, cuts + [len(data) - 1, len(data) - 2])
    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 7, 64, 1000, len(data)):
        out.append((f"random-{size}", rng.integers(0, 256, size, dtype=np.uint8).tobytes()))
    out += [
        ("zeros", b"\0" * 512),
        ("varint-field-1", b"\x08\x01" * 8),  # pieces of the wrong wire type
        ("varint-field-2", data[: cuts[3]] + b"\x10\x05"),
        ("json", b'{"model": "unigram"}'),
        ("endless-varint", b"\x0a" + b"\xff" * 64),
        ("huge-length", b"\x0a\xff\xff\xff\xff\x0f" + data[:100]),
        ("doubled", data + data),  # two sets of specs: the later ones win, pieces doubled
    ]
    return out


def run_tokenizer(variants, target: str, tokenizer_folder, tmp_path) -> dict[str, list[str]]:
    src, reference = tokenizer_folder
    work = tmp_path / "tok"
    shutil.copytree(src, work)
    load = lambda: xj.XmodTokenizer.from_pretrained(work)  # noqa: E731
    return check_variants(
        writing(work / target, variants), load, lambda t: tokenizer_difference(t, reference), work
    )


def test_sentencepiece_model_truncated_or_garbage(tokenizer_folder, tmp_path):
    data = (tokenizer_folder[0] / SPM).read_bytes()
    variants = spm_variants(data, every_boundary=False)
    assert len(variants) >= 100
    loaded = run_tokenizer(variants, SPM, tokenizer_folder, tmp_path)["identical"]
    assert not loaded, loaded


@pytest.mark.slow
def test_sentencepiece_model_cut_at_every_field(tokenizer_folder, tmp_path):
    data = (tokenizer_folder[0] / SPM).read_bytes()
    run_tokenizer(spm_variants(data, every_boundary=True), SPM, tokenizer_folder, tmp_path)


def tokenizer_config_variants(text: str) -> list[Variant]:
    data = json.loads(text)
    raw = text.encode()
    out = truncations(raw, range(len(raw)))
    for name, body in (
        ("binary", b"\xff\xfe\x00"),
        ("array", b"[]"),
        ("number", b"1"),
        ("null", b"null"),
        ("string", b'"x"'),
    ):
        out.append((f"not-an-object-{name}", body))
    for value in ("512", -1, 0, True, [512], 1.5, None, 10**30, 1e30, {"v": 1}):
        out.append(
            (f"max-length-{value!r}", json.dumps({**data, "model_max_length": value}).encode())
        )
    return out


def test_tokenizer_config_variants(tokenizer_folder, tmp_path):
    text = (tokenizer_folder[0] / TOKENIZER_CONFIG).read_text()
    variants = tokenizer_config_variants(text)
    loaded = run_tokenizer(variants, TOKENIZER_CONFIG, tokenizer_folder, tmp_path)["identical"]
    # no limit is the default: None, transformers' int(1e30), and the file without its newline
    no_limit = {"max-length-None", f"max-length-{10**30!r}", "max-length-1e+30"}
    assert set(loaded) <= no_limit | {f"cut@{len(text.encode()) - 1}"}, loaded


def tokenizer_json_variants() -> list[Variant]:
    unigram = {"type": "Unigram", "vocab": [["<s>", 0.0], ["<pad>", 0.0], ["</s>", 0.0]]}
    bodies = {
        "not-an-object": [],
        "model-a-list": {"model": []},
        "model-bpe": {"model": {"type": "BPE", "vocab": {}}},
        "vocab-of-strings": {"model": {"type": "Unigram", "vocab": ["a", "b"]}},
        "vocab-triples": {"model": {"type": "Unigram", "vocab": [["a", 0.0, 1]]}},
        "too-few-pieces": {"model": unigram},
        "normalizer-a-list": {"model": unigram, "normalizer": []},
        "bad-charsmap": {
            "model": unigram,
            "normalizer": {"type": "Precompiled", "precompiled_charsmap": "***"},
        },
        "added-token-without-content": {"model": unigram, "added_tokens": [{"id": 1}]},
        "added-tokens-a-dict": {"model": unigram, "added_tokens": {"a": 1}},
    }
    out = [(name, json.dumps(body).encode()) for name, body in bodies.items()]
    out += truncations(json.dumps(bodies["too-few-pieces"]).encode(), range(0, 90, 9))
    return out


def test_tokenizer_json_variants(tmp_path):
    folder = tmp_path / "tok"
    folder.mkdir()
    load = lambda: xj.XmodTokenizer.from_pretrained(folder)  # noqa: E731
    variants = writing(folder / "tokenizer.json", tokenizer_json_variants())
    check_variants(variants, load, lambda t: "loaded a broken file", folder)
