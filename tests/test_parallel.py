"""Sharding (`xmod_jax.parallel`): results equal one device's, parameters really split, uneven
splits refused by name, checkpoints restored onto other mesh shapes, sharded resume exact.

The multi-device checks need 8 devices, and every other test one: they run in subprocesses with
8 simulated CPU devices (`parallel_checks.py`; two processes side by side, about 40 s on 2 idle
cores, 55 s on a busy machine), which print raw measurements. The judgements, and the expected
splits (written out by hand from the presets), are here.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax.linen import logical_to_mesh_axes
from helpers import tiny_config
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import xmod_jax as xj
from xmod_jax import parallel as xp

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
FLOAT32 = 4


# Two processes, about equally long, run side by side (each compilation is single-threaded).
CHECK_GROUPS = [
    ["train", "resume", "errors", "readme"],
    ["forward", "bytes", "checkpoints", "example", "pretrain_loop"],
]


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    script = str(ROOT / "tests" / "parallel_checks.py")
    processes = [
        subprocess.Popen(
            [sys.executable, script, str(tmp_path_factory.mktemp("parallel")), *group],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for group in CHECK_GROUPS
    ]
    results = {}
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        errors = [line for line in stderr.splitlines() if "Involuntary" not in line]
        assert process.returncode == 0, "\n".join(errors[-40:])
        results.update(json.loads(stdout.strip().splitlines()[-1]))
        rebuilt = [line for line in stderr.splitlines() if "Involuntary full remat" in line]
        results.setdefault("rematerialized", []).extend(rebuilt)
    return results


# ---------------------------------------------------------------- expected splits, by hand
# Each leaf's axes, one letter per dimension: E embed, H heads, M mlp, A adapter, L lang,
# "-" never split (vocab, positions, head dim, labels).
LEAF_AXES = [
    (r"(word|position|token_type)_embeddings/embedding$", "-E"),
    (r"LayerNorm/(scale|bias)$", "E"),
    (r"self/(query|key|value)/kernel$", "EH-"),
    (r"self/(query|key|value)/bias$", "H-"),
    (r"attention/output/dense/kernel$", "H-E"),
    (r"intermediate/dense/kernel$|classifier/dense/kernel$", "EM"),
    (r"intermediate/dense/bias$|classifier/dense/bias$", "M"),
    (r"layer_\d/output/dense/kernel$", "ME"),
    (r"output/dense/bias$", "E"),
    (r"dense1/kernel$", "LEA"),
    (r"dense1/bias$", "LA"),
    (r"dense2/kernel$", "LAE"),
    (r"dense2/bias$", "LE"),
    (r"out_proj/kernel$", "E-"),
    (r"out_proj/bias$", "-"),
]
# case -> (letter -> mesh axis), and the mesh's axis sizes
SPLITS = {
    "data_8x1x1": ({}, {}),
    "fsdp_1x8x1": ({"E": "fsdp"}, {"fsdp": 8}),
    "fsdp_tensor_2x2x2": (
        {"E": "fsdp", "H": "tensor", "M": "tensor", "A": "tensor"},
        {"fsdp": 2, "tensor": 2},
    ),
    # lang over fsdp comes first: adapter leaves split by language, not by embed
    "fsdp_tensor+lang_1x4x2": (
        {"L": "fsdp", "E": "fsdp", "H": "tensor", "M": "tensor", "A": "tensor"},
        {"fsdp": 4, "tensor": 2},
    ),
}


def expected_shard_shape(path: str, shape: list[int], case: str) -> tuple[int, ...]:
    letters = next(axes for pattern, axes in LEAF_AXES if re.search(pattern, path))
    assert len(letters) == len(shape), path
    mapping, sizes = SPLITS[case]
    used, out = set(), []
    for letter, size in zip(letters, shape, strict=True):
        axis = mapping.get(letter)
        if axis is not None and axis not in used:
            used.add(axis)
            size //= sizes[axis]
        out.append(size)
    return tuple(out)


# ------------------------------------------------------------------------------------ tests
def test_sharded_forward_equals_one_device(measured):
    forward = measured["forward"]
    assert set(forward) == {
        "data_8x1x1",
        "fsdp_1x8x1",
        "fsdp_tensor_2x2x2",
        "fsdp_tensor+lang_1x4x2",
    }
    for case, result in forward.items():
        assert result["scale"] > 0.5, case  # hidden states of order one, so 1e-5 means something
        assert result["diff"] < TOLERANCE, (case, result)
    # the residual stream's constraint keeps the outputs split by batch, not gathered
    assert forward["fsdp_1x8x1"]["batch_split"] == "P('fsdp',)"
    assert forward["fsdp_tensor_2x2x2"]["batch_split"] == "P(('data', 'fsdp'),)"


def test_the_pretraining_loop_runs_on_a_mesh_and_resumes_there(measured):
    loop = measured["pretrain_loop"]
    assert loop["steps"] == {"one_device": 4, "mesh": 4, "mesh_resumed": 4}
    assert loop["mesh_vs_one_device"] < TOLERANCE  # split work: float rounding only
    assert loop["resumed_vs_straight"] < TOLERANCE
    # fsdp_tensor: the query kernel [embed, heads, head_dim] split over fsdp and tensor
    assert loop["resumed_query_spec"] == "P('fsdp', 'tensor', None)"


def test_no_tensor_is_rebuilt_whole_on_every_device(measured):
    # XLA's warning when it cannot reshard efficiently and replicates a tensor instead: the
    # constraints in `nn/constraints.py` keep every step of the checks free of it
    assert measured["rematerialized"] == []


def test_sharded_pretrain_steps_equal_one_device(measured):
    train = measured["train"]
    assert set(train) == {"fsdp_tensor_2x2x2", "fsdp+lang_2x4x1"}
    for case, result in train.items():
        assert result["step"] == 4 and result["kept_shardings"], case
        assert result["param_diff"] < TOLERANCE, (case, result)
        assert result["opt_diff"] < TOLERANCE, (case, result)
        assert result["loss_diff"] < TOLERANCE, (case, result)


def test_sharded_resume_continues_exactly(measured):
    resume = measured["resume"]
    for case, result in resume.items():
        assert result["restored_step"] == 2 and result["restored_shardings"], case
    # saved and resumed on the same mesh: bit-exact; on another mesh shape: within float noise
    assert resume["fsdp_tensor_2x2x2"]["param_diff"] == 0.0
    assert resume["fsdp_tensor_2x2x2"]["opt_diff"] == 0.0
    assert resume["fsdp+lang_2x4x1"]["param_diff"] < 1e-6
    assert resume["fsdp+lang_2x4x1"]["opt_diff"] < 1e-6


def test_parameters_are_really_split(measured):
    for case, result in measured["bytes"].items():
        expected_total = 0
        for path, leaf in result["leaves"].items():
            shard_shape = expected_shard_shape(path, leaf["shape"], case)
            assert leaf["shard_shapes"] == [list(shard_shape)], (case, path, leaf)
            shard_bytes = int(np.prod(shard_shape)) * FLOAT32
            assert leaf["shard_nbytes"] == [shard_bytes] * 8, (case, path)
            expected_total += shard_bytes
        per_device = result["params_per_device"]
        assert sorted(per_device) == [str(i) for i in range(8)]
        assert set(per_device.values()) == {expected_total}, case
    data, fsdp = measured["bytes"]["data_8x1x1"], measured["bytes"]["fsdp_1x8x1"]
    assert set(data["params_per_device"].values()) == {data["params_total"]}  # replicated
    assert max(fsdp["params_per_device"].values()) < fsdp["params_total"] / 7
    # the optimizer state follows its params; only step counts and the few leaves without an
    # embed axis stay whole
    assert set(data["opt_per_device"].values()) == {data["opt_total"]}
    assert max(fsdp["opt_per_device"].values()) < fsdp["opt_total"] / 7


def test_uneven_splits_name_the_leaf_the_axis_and_the_sizes(measured):
    errors = measured["errors"]
    assert re.fullmatch(
        r"roberta/encoder/layer_0/attention/\w+/\w+/kernel: axis heads of size 4 cannot split "
        r"8 ways over mesh axes \('tensor',\) \(.*\)",
        errors["heads_over_8"],
    ), errors["heads_over_8"]
    assert errors["batch_of_6"].startswith(
        "batch['lang_ids']: batch axis of size 6 cannot split 8 ways over mesh axes "
        "('data', 'fsdp')"
    )


def test_params_restore_onto_other_mesh_shapes(measured):
    restored = measured["checkpoints"]
    assert restored["from_pretrained_diff"] == 0.0  # the folder is an ordinary orbax folder
    query = "roberta/encoder/layer_1/attention/self/query/kernel"  # [32, 4, 8]: 4096 bytes
    expected = {
        "fsdp_1x8x1": ("P('fsdp', None, None)", 4096 // 8),
        "fsdp_tensor_1x4x2": ("P('fsdp', 'tensor', None)", 4096 // 8),
    }
    for case, (spec, shard_bytes) in expected.items():
        result = restored[case]
        assert result["diff"] == 0.0 and result["as_targeted"], case
        assert result["specs"][query] == spec
        assert result["shard_nbytes"][query] == [shard_bytes]
        assert result["specs"]["roberta/encoder/layer_1/intermediate/dense/bias"] == (
            "P(None,)" if case == "fsdp_1x8x1" else "P('tensor',)"
        )


# ------------------------------------------------------------------ one device, in process
def test_rules_follow_the_presets():
    def spec(names, preset, lang=None):
        return logical_to_mesh_axes(names, xp.sharding_rules(preset, lang=lang))

    kernel = ("lang", "embed", "adapter")
    assert spec(kernel, "data") == P(None, None, None)
    assert spec(kernel, "fsdp") == P(None, "fsdp", None)
    assert spec(kernel, "fsdp_tensor") == P(None, "fsdp", "tensor")
    assert spec(kernel, "fsdp_tensor", lang="fsdp") == P("fsdp", None, "tensor")
    assert spec(kernel, "data", lang="data") == P("data", None, None)
    assert spec(("vocab", "embed"), "fsdp_tensor") == P(None, "fsdp")
    assert spec(("batch", None, None), "fsdp") == P(("data", "fsdp"), None, None)
    with pytest.raises(ValueError, match="unknown sharding preset 'zero3'; known: data, fsdp"):
        xp.sharding_rules("zero3")
    with pytest.raises(ValueError, match="lang must name a mesh axis"):
        xp.sharding_rules("fsdp", lang="model")


def test_mesh_has_auto_axes_and_checks_its_size():
    mesh = xp.make_mesh()
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert mesh.axis_types == (AxisType.Auto,) * 3
    with pytest.raises(ValueError, match="needs 2 devices; there are 1"):
        xp.make_mesh(1, 2, 1)
    with pytest.raises(ValueError, match="at most one -1"):
        xp.make_mesh(-1, -1)
    explicit = jax.make_mesh((1, 1, 1), xp.MESH_AXES)  # jax 0.10's default axis type
    model = xj.XmodModel(tiny_config(vocab_size=40))
    with pytest.raises(ValueError, match="are not Auto; build the mesh with"):
        xp.params_shardings(model.param_shapes(), model, explicit, xp.sharding_rules())


def test_one_process_feeds_every_row():
    mesh = xp.make_mesh()
    np.testing.assert_array_equal(xp.process_rows(mesh, 6), np.arange(6))
    batch = xp.shard_batch({"lang_ids": np.arange(6, dtype=np.int32)}, mesh)
    np.testing.assert_array_equal(batch["lang_ids"], np.arange(6))
    # several processes: tests/test_distributed.py


def test_one_device_mesh_forward_is_the_plain_forward():
    model = xj.XmodForTokenClassification(tiny_config(vocab_size=40))
    params = model.init_params(jax.random.key(0))
    batch = {
        "input_ids": np.arange(3, 27, dtype=np.int32).reshape(2, 12),
        "lang_ids": np.array([1, 0], np.int32),
    }

    def forward(params, batch):
        return model.apply({"params": params}, **batch).logits

    mesh, rules = xp.make_mesh(), xp.sharding_rules("fsdp_tensor")
    shardings = xp.params_shardings(params, model, mesh, rules)
    sharded = xp.shard_forward(forward, shardings, mesh, rules)(xp.shard(params, shardings), batch)
    np.testing.assert_array_equal(sharded, jax.jit(forward)(params, batch))


def test_sharded_example_learns_and_shrinks_what_each_device_holds(measured):
    example = measured["example"]
    losses, held, total = example["losses"], example["bytes"], example["params_total"]
    assert example["devices"] == 8
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.15  # the loss really falls
    assert example["accuracy"] > 0.75  # chance is 0.5
    params = {name: sizes["params"] for name, sizes in held.items()}
    assert params["data 8x1x1"] == total  # replicated
    assert params["fsdp 1x8x1"] < total / 7  # all but the few leaves without an embed axis
    assert total / 4 < params["fsdp_tensor 2x2x2"] < total / 3  # 4-way, two data replicas
    assert params["fsdp_tensor (lang over fsdp) 1x4x2"] < total / 6


def test_readme_snippet_trains_saves_and_resumes_on_another_mesh(measured):
    readme = measured["readme"]
    assert np.isfinite(readme["loss"]) and readme["step"] == 1
    assert readme["query_mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert readme["query_spec"] == "P('fsdp', None, None)"
