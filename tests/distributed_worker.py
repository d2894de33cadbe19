"""Two processes on one machine as one mesh, run by `test_distributed.py`.

    python tests/distributed_worker.py train PROCESS_ID PORT WORKDIR  # two, 2 CPU devices each
    python tests/distributed_worker.py reference WORKDIR  # meanwhile: one process, one device
    python tests/distributed_worker.py restore WORKDIR  # then: one process, 4 CPU devices

`train`: `jax.distributed` over 127.0.0.1:PORT (gloo CPU collectives) and a `fsdp 2 x tensor 2`
mesh whose `fsdp` axis spans the processes; the MLM pre-training steps of `parallel_checks.py`
(masks drawn inside the step, the paper's freezing) on its model cut to one layer, each process
feeding its own rows of the global batches; the params
saved with `save_params` and the train state with `TrainCheckpoints`, both restored again onto a
`fsdp 4` mesh over both processes. `reference`: the same steps on one device, over the whole
global batches. `restore`: one process restores what the two saved onto other mesh shapes, and
onto one device (`from_pretrained`, and a train state without shardings).
Each writes raw arrays (`NAME.npz`, gathered whole) and facts (`NAME.json`) into WORKDIR; every
judgement is made by the test.
"""

from __future__ import annotations

import json
import os
import sys
import time

STARTED = time.perf_counter()  # before jax's import, which costs seconds

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402
from parallel_checks import BATCH, Pretraining, config  # noqa: E402  (and its jax settings)

import xmod_jax as xj  # noqa: E402
from xmod_jax import parallel as xp  # noqa: E402

PROCESSES, LOCAL_DEVICES = 2, 2
LAYERS = 1  # parallel_checks.py's model with one layer of two: its steps compile 1/5 faster
TIMEOUT_S = 120  # start-up, heartbeats, shut-down: generous, for a busy machine


def reference(workdir: str) -> None:
    """The steps on one device, over the whole global batches."""
    lap = Laps()
    lap("start")
    run = Pretraining(num_hidden_layers=LAYERS)
    step, state, losses = jax.jit(run.step()), run.state(), []
    lap("setup")
    for batch in run.data:
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        lap("first step" if len(losses) == 1 else "steps")
    facts = {"losses": losses, "step": int(state.step), "seconds": lap.seconds}
    write(workdir, "reference", facts, {"state": flat(state), "initial": flat(run.params)})


def flat(tree) -> dict[str, np.ndarray]:
    """Leaves by key path (`['roberta']['encoder']...`), as numpy arrays."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def gathered(tree, mesh) -> dict[str, np.ndarray]:
    """Every leaf whole on every process (one all-gather program for the tree), flattened."""
    whole = jax.jit(lambda t: t, out_shardings=NamedSharding(mesh, PartitionSpec()))(tree)
    return flat(jax.device_get(whole))


def shardings_kept(tree, shardings) -> bool:
    pairs = zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True)
    return all(leaf.sharding == sharding for leaf, sharding in pairs)


class Laps:
    """Wall and CPU seconds of each phase of a worker (the CPU time of this process only)."""

    def __init__(self) -> None:
        self.last, self.seconds = (STARTED, 0.0), {}

    def __call__(self, phase: str) -> None:
        now = (time.perf_counter(), time.process_time())
        spent = self.seconds.setdefault(phase, {"wall": 0.0, "cpu": 0.0})
        spent["wall"] += now[0] - self.last[0]
        spent["cpu"] += now[1] - self.last[1]
        self.last = now


def train(process_id: int, port: int, workdir: str) -> None:
    lap = Laps()
    jax.config.update("jax_num_cpu_devices", LOCAL_DEVICES)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process on CPU
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        coordinator_bind_address=f"127.0.0.1:{port}",  # jax's default, [::], is every interface
        num_processes=PROCESSES,
        process_id=process_id,
        initialization_timeout=TIMEOUT_S,
        heartbeat_timeout_seconds=TIMEOUT_S,
        shutdown_timeout_seconds=TIMEOUT_S,
    )
    lap("start")  # imports, jax.distributed
    run = Pretraining(num_hidden_layers=LAYERS)
    model, params, tx = run.model, run.params, run.tx
    mesh, rules = xp.make_mesh(1, 2, 2), xp.sharding_rules("fsdp_tensor")
    shardings = xp.train_state_shardings(run.state(), model, mesh, rules)
    step = xp.shard_train_step(run.step(), shardings, mesh, rules)
    state = xp.shard(run.state(), shardings)
    rows = xp.process_rows(mesh, BATCH)
    lap("setup")  # model, optimizer, shardings, placing the state
    losses = []
    for batch in run.data:
        state, metrics = step(state, {key: value[rows] for key, value in batch.items()})
        losses.append(float(metrics["loss"]))
        lap("first step" if len(losses) == 1 else "steps")  # the first one compiles

    xp.save_params(os.path.join(workdir, "params"), model, state.params)
    try:  # process 0 refuses to replace the folder; every process must raise, none hang
        xp.save_params(os.path.join(workdir, "params"), model, state.params)
        refused = None
    except Exception as e:
        refused = f"{type(e).__name__}: {e}"
    with xj.TrainCheckpoints(os.path.join(workdir, "ckpt"), keep_best=0) as ckpt:
        ckpt.save(state)
    lap("save")

    fsdp4, fsdp_rules = xp.make_mesh(1, 4, 1), xp.sharding_rules("fsdp")
    params_back = xp.restore_params(os.path.join(workdir, "params"), model, fsdp4, fsdp_rules)
    target = xp.train_state_shardings(state, model, fsdp4, fsdp_rules)
    abstract = jax.eval_shape(lambda p: xj.TrainState.create(p, tx), params)
    with xj.TrainCheckpoints(os.path.join(workdir, "ckpt"), keep_best=0) as ckpt:
        state_back = ckpt.restore(xp.with_shardings(abstract, target))
    lap("restore")

    query = state.params["roberta"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]
    facts = {
        "process_count": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "mesh_processes": [[d.process_index for d in row] for row in mesh.devices[0]],
        "rows": rows.tolist(),
        "query_shape": list(query.shape),
        "query_local_shards": [list(s.data.shape) for s in query.addressable_shards],
        "query_fully_addressable": query.is_fully_addressable,
        "kept_shardings": shardings_kept(state, shardings),
        "params_back_shardings": shardings_kept(params_back, target.params),
        "state_back_shardings": shardings_kept(state_back, target),
        "losses": losses,
        "save_again": refused,
        "step": int(state.step),
    }
    arrays = {
        "trained": gathered(state, mesh),
        "params_back": gathered(params_back, fsdp4),
        "state_back": gathered(state_back, fsdp4),
    }
    lap("gather")
    facts["seconds"] = lap.seconds
    write(workdir, f"train_{process_id}", facts, arrays if process_id == 0 else {})
    jax.distributed.shutdown()


def restore(workdir: str) -> None:
    """What the two processes saved, restored by one process onto two other mesh shapes (the
    params) and a third (the train state, adapters split by language), and onto one device."""
    lap = Laps()
    jax.config.update("jax_num_cpu_devices", 4)
    lap("start")
    model = xj.XmodForMaskedLM(config(num_hidden_layers=LAYERS))
    shapes = model.param_shapes()  # no arrays: everything comes from the checkpoints
    folder, facts, arrays = os.path.join(workdir, "params"), {}, {}
    for name, preset, shape in [
        ("fsdp_1x4x1", "fsdp", (1, 4, 1)),
        ("data_2x1x2", "fsdp_tensor", (2, 1, 2)),
    ]:
        mesh, rules = xp.make_mesh(*shape), xp.sharding_rules(preset)
        restored = xp.restore_params(folder, model, mesh, rules)
        facts[f"params {name}"] = shardings_kept(
            restored, xp.params_shardings(shapes, model, mesh, rules)
        )
        arrays[f"params {name}"] = flat(restored)
    mesh, rules = xp.make_mesh(1, 4, 1), xp.sharding_rules("fsdp", lang="fsdp")
    tx = xj.make_optimizer(shapes, learning_rate=1e-3)
    abstract = jax.eval_shape(lambda p: xj.TrainState.create(p, tx), shapes)
    target = xp.train_state_shardings(abstract, model, mesh, rules)
    with xj.TrainCheckpoints(os.path.join(workdir, "ckpt"), keep_best=0) as ckpt:
        restored = ckpt.restore(xp.with_shardings(abstract, target))
    facts["state fsdp+lang_1x4x1"] = shardings_kept(restored, target)
    arrays["state fsdp+lang_1x4x1"] = flat(restored)
    with xj.TrainCheckpoints(os.path.join(workdir, "ckpt"), keep_best=0) as ckpt:
        restored = ckpt.restore(abstract)  # no shardings: onto one device
    facts["state one device"] = {str(leaf.sharding) for leaf in jax.tree.leaves(restored)} == {
        str(jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    }
    arrays["state one device"] = flat(restored)
    arrays["from_pretrained"] = flat(xj.XmodForMaskedLM.from_pretrained(folder)[1])  # one device
    lap("restore")
    write(workdir, "restore", {**facts, "seconds": lap.seconds}, arrays)


def write(workdir: str, name: str, facts: dict, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    with open(os.path.join(workdir, f"{name}.json"), "w") as f:
        json.dump(facts, f)
    if arrays:
        np.savez(
            os.path.join(workdir, f"{name}.npz"),
            **{
                f"{group}/{path}": a
                for group, leaves in arrays.items()
                for path, a in leaves.items()
            },
        )


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        {"reference": reference, "restore": restore}[sys.argv[1]](sys.argv[2])
