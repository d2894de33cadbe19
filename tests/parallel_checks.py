"""Measurements on 8 simulated CPU devices, run by `test_parallel.py` in subprocesses.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/parallel_checks.py DIR [CHECK]

prints one JSON object: raw measurements only (differences against plain single-device runs,
shard shapes and bytes, error messages, shardings as strings); every judgement is made by the
tests. `distributed_worker.py` takes its model, batches and steps from here (`Pretraining`).
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np

import xmod_jax as xj
from xmod_jax import parallel as xp
from xmod_jax.train.masking import MaskingSpec
from xmod_jax.train.mlm_data import MixedLanguageBatches
from xmod_jax.train.pretraining import PretrainConfig, make_pretrain_step, pretrain

jax.config.update("jax_default_matmul_precision", "highest")
# XLA's optimization passes cost most of the compile time of these tiny steps (2.5x), and their
# runs are short; the SPMD partitioner, which is what is tested, runs either way.
jax.config.update("jax_disable_most_optimizations", True)

CONFIG = dict(
    vocab_size=64,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
    type_vocab_size=1,
    languages=["en_XX", "de_DE", "fr_XX", "sw_KE"],
)
BATCH, LENGTH, STEPS = 8, 12, 4
# (preset, lang rule, data, fsdp, tensor)
FORWARD_CASES = [
    ("data", None, 8, 1, 1),
    ("fsdp", None, 1, 8, 1),
    ("fsdp_tensor", None, 2, 2, 2),
    ("fsdp_tensor", "fsdp", 1, 4, 2),
]
TRAIN_MESHES = {  # the first one saves the checkpoint that every one resumes from
    "fsdp_tensor_2x2x2": ("fsdp_tensor", None, 2, 2, 2),
    "fsdp+lang_2x4x1": ("fsdp", "data", 2, 4, 1),
}


def config(**overrides) -> xj.XmodConfig:
    return xj.XmodConfig(**{**CONFIG, **overrides})


def batches(n: int, labels: bool) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        ids = rng.integers(3, CONFIG["vocab_size"], (BATCH, LENGTH)).astype(np.int32)
        ids[:, 0] = 0  # <s>
        mask = np.ones_like(ids)
        mask[::3, -3:] = 0  # some padding
        ids[mask == 0] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        batch["lang_ids"] = rng.integers(0, len(CONFIG["languages"]), BATCH).astype(np.int32)
        if labels:
            batch["labels"] = rng.integers(0, 2, BATCH).astype(np.int32)
        out.append(batch)
    return out


def fresh_state(params, tx) -> xj.TrainState:
    """A train state over a copy of `params` (the steps donate their state, params included)."""
    return xj.TrainState.create(jax.tree.map(np.array, params), tx)


def max_diff(a, b) -> float:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in pairs)


def paths(tree) -> list[str]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return ["/".join(str(k.key) for k in path) for path, _ in flat]


def setup(preset, lang, data, fsdp, tensor):
    return xp.make_mesh(data, fsdp, tensor), xp.sharding_rules(preset, lang=lang)


def check_forward() -> dict:
    model, params, _ = classification_setup()
    batch = batches(1, labels=False)[0]

    def forward(params, batch):
        out = model.apply({"params": params}, **batch, output_hidden_states=True)
        return {"logits": out.logits, "last_hidden_state": out.hidden_states[-1]}

    reference = jax.jit(forward)(params, batch)  # one device
    results = {}
    for preset, lang, *shape in FORWARD_CASES:
        mesh, rules = setup(preset, lang, *shape)
        shardings = xp.params_shardings(params, model, mesh, rules)
        out = xp.shard_forward(forward, shardings, mesh, rules)(xp.shard(params, shardings), batch)
        name = f"{preset}{'+lang' if lang else ''}_{'x'.join(map(str, shape))}"
        results[name] = {
            "diff": max_diff(out, reference),
            "scale": float(np.max(np.abs(reference["last_hidden_state"]))),
            "batch_split": str(out["last_hidden_state"].sharding.spec),
        }
    return results


def classification_setup():
    model = xj.XmodForSequenceClassification(config())
    params = model.init_params(jax.random.key(1))
    tx = xj.make_optimizer(params, learning_rate=1e-3)
    return model, params, tx


def run_steps(step, state, data):
    losses = []
    for batch in data:
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return state, losses


class Pretraining:
    """MLM pre-training steps (masks drawn inside the step) under the paper's freezing, so the
    optimizer state has holes; one compiled step per mesh, shared by the train and resume
    checks (each compilation of a train step costs seconds). `overrides`: of `CONFIG`."""

    def __init__(self, **overrides) -> None:
        self.model = xj.XmodForMaskedLM(config(**overrides))
        self.params = self.model.init_params(jax.random.key(2))
        self.tx = xj.make_optimizer(self.params, learning_rate=1e-3)
        self.labels = xj.freeze_labels(self.params, "xmod_paper")
        self.spec = MaskingSpec(mask_id=3, vocab_size=64, special_ids=(0, 1, 2), first_regular_id=3)
        self.data = batches(STEPS, labels=False)
        self.steps = {}

    def step(self):
        return make_pretrain_step(self.model, self.tx, self.labels, self.spec)

    def sharded(self, name: str):
        """(state shardings, jitted step) on the mesh `TRAIN_MESHES[name]`."""
        if name not in self.steps:
            preset, lang, *shape = TRAIN_MESHES[name]
            mesh, rules = setup(preset, lang, *shape)
            shardings = xp.train_state_shardings(self.state(), self.model, mesh, rules)
            self.steps[name] = shardings, xp.shard_train_step(self.step(), shardings, mesh, rules)
        return self.steps[name]

    def state(self) -> xj.TrainState:
        return fresh_state(self.params, self.tx)


def check_train(run: Pretraining) -> dict:
    """4 steps on one device and on each mesh of `TRAIN_MESHES`."""
    results = {}
    reference, ref_losses = run_steps(run.step(), run.state(), run.data)
    for name in TRAIN_MESHES:
        shardings, step = run.sharded(name)
        state, losses = run_steps(step, xp.shard(run.state(), shardings), run.data)
        results[name] = {
            "param_diff": max_diff(state.params, reference.params),
            "opt_diff": max_diff(state.opt_state, reference.opt_state),
            "loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)),
            "kept_shardings": all(
                a.sharding == s
                for a, s in zip(jax.tree.leaves(state), jax.tree.leaves(shardings), strict=True)
            ),
            "step": int(state.step),
        }
    return results


def check_resume(run: Pretraining, workdir: str) -> dict:
    """2 steps on the first mesh, saved; restored onto every mesh; 2 more steps there, compared
    with 4 steps straight on that mesh."""
    first = next(iter(TRAIN_MESHES))
    shardings, step = run.sharded(first)
    state, _ = run_steps(step, xp.shard(run.state(), shardings), run.data[:2])
    with xj.TrainCheckpoints(os.path.join(workdir, "ckpt"), keep_best=0) as ckpt:
        ckpt.save(state)
    abstract = jax.eval_shape(lambda p: xj.TrainState.create(p, run.tx), run.params)
    results = {}
    for name in TRAIN_MESHES:
        shardings, step = run.sharded(name)
        straight, _ = run_steps(step, xp.shard(run.state(), shardings), run.data)
        with xj.TrainCheckpoints(os.path.join(workdir, "ckpt"), keep_best=0) as ckpt:
            restored = ckpt.restore(xp.with_shardings(abstract, shardings))
        kept = all(
            a.sharding == s
            for a, s in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings), strict=True)
        )
        restored_step = int(restored.step)
        resumed, _ = run_steps(step, restored, run.data[2:])  # donates `restored`
        results[name] = {
            "restored_step": restored_step,
            "restored_shardings": kept,
            "param_diff": max_diff(resumed.params, straight.params),
            "opt_diff": max_diff(resumed.opt_state, straight.opt_state),
        }
    return results


def check_bytes() -> dict:
    """Per leaf: full shape and the bytes and shape of every device's shard, per preset."""
    model, params, tx = classification_setup()
    state = fresh_state(params, tx)
    results = {}
    for preset, lang, *shape in [("data", None, 8, 1, 1), *FORWARD_CASES[1:]]:
        mesh, rules = setup(preset, lang, *shape)
        shardings = xp.train_state_shardings(state, model, mesh, rules)
        placed = xp.shard(state, shardings)
        leaves = {}
        for path, leaf in zip(paths(placed.params), jax.tree.leaves(placed.params), strict=True):
            leaves[path] = {
                "shape": list(leaf.shape),
                "nbytes": int(leaf.nbytes),
                "shard_shapes": sorted({tuple(s.data.shape) for s in leaf.addressable_shards}),
                "shard_nbytes": [int(s.data.nbytes) for s in leaf.addressable_shards],
            }
        name = f"{preset}{'+lang' if lang else ''}_{'x'.join(map(str, shape))}"
        results[name] = {
            "leaves": leaves,
            "params_per_device": xp.bytes_per_device(placed.params),
            "opt_per_device": xp.bytes_per_device(placed.opt_state),
            "params_total": sum(int(x.nbytes) for x in jax.tree.leaves(params)),
            "opt_total": sum(int(x.nbytes) for x in jax.tree.leaves(state.opt_state)),
        }
    return results


def check_errors() -> dict:
    model = xj.XmodForSequenceClassification(config())
    params = model.param_shapes()
    results = {}
    mesh, rules = setup("fsdp_tensor", None, 1, 1, 8)
    try:
        xp.params_shardings(params, model, mesh, rules)
    except ValueError as e:
        results["heads_over_8"] = str(e)
    mesh, rules = setup("data", None, 8, 1, 1)
    try:
        xp.shard_batch(batches(1, labels=True)[0] | {"lang_ids": np.zeros(6, np.int32)}, mesh)
    except ValueError as e:
        results["batch_of_6"] = str(e)
    return results


def check_checkpoints(workdir: str) -> dict:
    """Params saved from fsdp 2 x tensor 4, restored onto fsdp 8, then fsdp 4 x tensor 2."""
    model, params, _ = classification_setup()
    folder = os.path.join(workdir, "params")
    mesh, rules = setup("fsdp_tensor", None, 1, 2, 4)
    xp.save_params(folder, model, xp.shard(params, xp.params_shardings(params, model, mesh, rules)))
    results = {}
    for preset, *shape in [("fsdp", 1, 8, 1), ("fsdp_tensor", 1, 4, 2)]:
        mesh, rules = setup(preset, None, *shape)
        restored = xp.restore_params(folder, model.config, mesh, rules)
        target = xp.params_shardings(params, model, mesh, rules)
        results[f"{preset}_{'x'.join(map(str, shape))}"] = {
            "diff": max_diff(restored, params),
            "specs": {
                path: str(leaf.sharding.spec)
                for path, leaf in zip(paths(restored), jax.tree.leaves(restored), strict=True)
            },
            "as_targeted": all(
                a.sharding == s
                for a, s in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True)
            ),
            "shard_nbytes": {
                path: sorted({int(s.data.nbytes) for s in leaf.addressable_shards})
                for path, leaf in zip(paths(restored), jax.tree.leaves(restored), strict=True)
            },
        }
    reloaded = xj.XmodForSequenceClassification.from_pretrained(folder)[1]
    results["from_pretrained_diff"] = max_diff(reloaded, params)
    return results


def check_pretrain_loop(workdir: str) -> dict:
    """`pretrain` (the loop: checkpoints, logs) for 4 steps on one device, on a mesh through
    `MeshPlacement`, and on the mesh stopped after 2 steps and resumed from its checkpoint."""
    model = xj.XmodForMaskedLM(config())
    params = model.init_params(jax.random.key(4))
    spec = MaskingSpec(mask_id=3, vocab_size=64, special_ids=(0, 1, 2), first_regular_id=3)
    rows = [b["input_ids"] for b in batches(len(CONFIG["languages"]), labels=False)]
    data = MixedLanguageBatches(rows, range(len(rows)), BATCH, pad_id=1)
    budget = PretrainConfig(steps=STEPS, warmup_steps=1, checkpoint_every=2, eval_every=STEPS)
    mesh, rules = setup("fsdp_tensor", None, 2, 2, 2)
    runs = {}
    for name, stops in (("one_device", [None]), ("mesh", [None]), ("mesh_resumed", [2, None])):
        placement = None if name == "one_device" else xp.MeshPlacement(model, mesh, rules)
        for stop in stops:
            state, _ = pretrain(
                model, params, data, spec, budget, os.path.join(workdir, f"pretrain_{name}"),
                progress=False, stop_after=stop, placement=placement,
            )  # fmt: skip
        runs[name] = state
    query = runs["mesh_resumed"].params["roberta"]["encoder"]["layer_0"]["attention"]["self"]
    return {
        "steps": {name: int(state.step) for name, state in runs.items()},
        "mesh_vs_one_device": max_diff(runs["mesh"].params, runs["one_device"].params),
        "resumed_vs_straight": max_diff(runs["mesh_resumed"].params, runs["mesh"].params),
        "resumed_query_spec": str(query["query"]["kernel"].sharding.spec),
    }


def check_example() -> dict:
    """`examples/train_sharded.py`, as its `main` runs it, minus the printing."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples"))
    import train_sharded

    result = train_sharded.run(quiet=True)
    _, params = train_sharded.build_model()
    return {**result, "params_total": sum(int(x.nbytes) for x in jax.tree.leaves(params))}


def check_readme(workdir: str) -> dict:
    """The README's "Beyond one device" snippet, on a tiny saved model, as written."""
    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    section = readme.split("## Beyond one device", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    folder = os.path.join(workdir, "tiny-xmod")
    model = xj.XmodForMaskedLM(config(hidden_size=16, num_attention_heads=2, intermediate_size=32))
    model.save_pretrained(folder, model.init_params(jax.random.key(3)))
    os.chdir(workdir)
    namespace = {}
    exec(snippet.replace("path/to/xmod-base", folder), namespace)
    state = namespace["state"]
    query = state.params["roberta"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]
    return {
        "loss": float(namespace["metrics"]["loss"]),
        "step": int(state.step),
        "query_spec": str(query.sharding.spec),
        "query_mesh": dict(query.sharding.mesh.shape),
    }


def main(workdir: str, names: list[str]) -> None:
    assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    run = Pretraining()
    checks = {
        "forward": check_forward,
        "train": lambda: check_train(run),
        "resume": lambda: check_resume(run, workdir),  # after "train": reuses its compilations
        "bytes": check_bytes,
        "errors": check_errors,
        "checkpoints": lambda: check_checkpoints(workdir),
        "example": check_example,
        "pretrain_loop": lambda: check_pretrain_loop(workdir),
        "readme": lambda: check_readme(workdir),
    }
    results = {}
    for name in names or checks:
        start = time.perf_counter()
        results[name] = checks[name]()
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
