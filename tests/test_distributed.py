"""Several processes as one mesh (`jax.distributed`): two local processes on CPU train like one,
save sharded params and train states together, and one process restores them on other meshes.

The processes (`distributed_worker.py`) talk over 127.0.0.1 only: two `train` workers with 2 CPU
devices each form a 4-device mesh (gloo CPU collectives between them) while a `reference` worker
runs the same steps on one device; then a `restore` worker reads what the two saved. They print
nothing the tests rely on: they write raw arrays and facts, judged here. About 45 s of CPU time
in all, most of it compiling the steps: half a minute on two idle cores.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "distributed_worker.py")
TOLERANCE = 1e-5
BATCH, STEPS = 8, 4  # parallel_checks.py's, whose steps the workers take
TIMEOUT_S = 600  # per group of workers (as test_parallel.py); one failing stops the others
PORT_TAKEN = ("Failed to start RPC server", "Failed to add port")  # the coordinator's bind


def gloo_missing() -> str | None:
    """Why cross-process collectives cannot run on this CPU platform, or None."""
    from jax._src.lib import _jax  # jaxlib's builds carry gloo where jax supports it

    if not hasattr(_jax, "make_gloo_tcp_collectives"):
        return "this jaxlib has no gloo CPU collectives (jax_cpu_collectives_implementation)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_together(workdir: pathlib.Path, commands: dict[str, list[str]]) -> str | None:
    """Run the workers side by side; the first to fail (or the deadline) stops the rest.
    Returns None, or the failure with each worker's last lines of stderr."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # devices set by the worker
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    logs = {name: workdir / f"{name}.log" for name in commands}
    running = {
        name: subprocess.Popen(
            [sys.executable, WORKER, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=logs[name].open("w"),
        )
        for name, args in commands.items()
    }
    deadline, failed = time.monotonic() + TIMEOUT_S, None
    while running and failed is None:
        for name, process in list(running.items()):
            if process.poll() is not None:
                del running[name]
                failed = f"{name} exited with {process.returncode}" if process.returncode else None
        if time.monotonic() > deadline:
            failed = f"timeout after {TIMEOUT_S} s"
        time.sleep(0.1)
    for process in running.values():
        process.kill()
        process.wait()
    if failed is None:
        return None
    tails = {name: log.read_text().splitlines()[-30:] for name, log in logs.items()}
    return f"{failed}:\n" + "\n".join(
        f"--- {name}\n" + "\n".join(lines) for name, lines in tails.items()
    )


def load(workdir: pathlib.Path, name: str) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """(facts, {group: {leaf path: array}}) written by a worker."""
    facts = json.loads((workdir / f"{name}.json").read_text())
    groups: dict[str, dict[str, np.ndarray]] = {}
    if (workdir / f"{name}.npz").exists():
        with np.load(workdir / f"{name}.npz") as arrays:
            for key in arrays.files:
                group, path = key.split("/", 1)
                groups.setdefault(group, {})[path] = arrays[key]
    return facts, groups


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    reason = gloo_missing()
    if reason:
        pytest.skip(reason)
    for _ in range(2):  # the free port may be taken before the coordinator binds it
        workdir, port = tmp_path_factory.mktemp("distributed"), str(free_port())
        failure = run_together(
            workdir,
            {
                "train_0": ["train", "0", port, str(workdir)],
                "train_1": ["train", "1", port, str(workdir)],
                "reference": ["reference", str(workdir)],
            },
        )
        if failure is None or not any(sign in failure for sign in PORT_TAKEN):
            break
    failure = failure or run_together(workdir, {"restore": ["restore", str(workdir)]})
    if failure:
        pytest.fail(f"distributed workers failed: {failure}")
    return {name: load(workdir, name) for name in ["train_0", "train_1", "reference", "restore"]}


def max_diff(leaves: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    assert leaves.keys() == reference.keys()
    return max(float(np.max(np.abs(leaves[k] - reference[k]), initial=0.0)) for k in leaves)


def part(leaves: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The leaves under `prefix` (".params", ".opt_state"), keyed by the rest of their path."""
    return {k[len(prefix) :]: v for k, v in leaves.items() if k.startswith(prefix)}


def test_two_processes_form_one_mesh_and_feed_their_own_rows(runs):
    facts = [runs["train_0"][0], runs["train_1"][0]]
    for process in facts:
        assert process["process_count"] == 2
        assert process["devices"] == 4 and process["local_devices"] == 2
        assert process["mesh_processes"] == [[0, 0], [1, 1]]  # fsdp across, tensor within
        # the query kernel [32, 4, 8] split fsdp x tensor: a quarter on each device, no process
        # holding all of it
        assert process["query_local_shards"] == [[16, 2, 8], [16, 2, 8]]
        assert not process["query_fully_addressable"]
        assert process["kept_shardings"] and process["step"] == STEPS
    rows = [process["rows"] for process in facts]
    assert sorted(rows[0] + rows[1]) == list(range(BATCH)) and len(rows[0]) == BATCH // 2


def test_two_processes_train_like_one_device(runs):
    reference_facts, reference = runs["reference"]
    trained = runs["train_0"][1]["trained"]
    for process in ("train_0", "train_1"):
        losses = runs[process][0]["losses"]
        assert max(abs(a - b) for a, b in zip(losses, reference_facts["losses"], strict=True)) < (
            TOLERANCE
        )
    state = reference["state"]
    assert max_diff(part(trained, ".params"), part(state, ".params")) < TOLERANCE
    assert max_diff(part(trained, ".opt_state"), part(state, ".opt_state")) < TOLERANCE
    assert trained[".step"] == state[".step"] == STEPS
    # the steps really moved the params: the comparison is not of two initial states
    assert max_diff(part(trained, ".params"), reference["initial"]) > 100 * TOLERANCE


def test_params_saved_by_two_processes_restore_onto_other_meshes(runs):
    facts, restored = runs["restore"]
    trained = part(runs["train_0"][1]["trained"], ".params")
    # one process, other mesh shapes; and the two processes again, on fsdp 4 across both
    for name in ["params fsdp_1x4x1", "params data_2x1x2"]:
        assert facts[name], name  # placed as the target shardings say
        assert max_diff(restored[name], trained) == 0.0, name
    assert max_diff(restored["from_pretrained"], trained) == 0.0  # an ordinary params folder
    for process in ("train_0", "train_1"):
        assert runs[process][0]["params_back_shardings"]
    assert max_diff(runs["train_0"][1]["params_back"], trained) == 0.0


def test_an_error_on_process_0_is_raised_on_every_process(runs):
    # saving into an existing folder without overwrite: process 0 refuses, the other follows
    first, second = runs["train_0"][0]["save_again"], runs["train_1"][0]["save_again"]
    assert re.fullmatch(r"FileExistsError: .*/params exists; pass overwrite=True .*", first), first
    assert second == f"CheckpointError: saving sharded params failed on process 0: {first}"


def test_train_state_saved_by_two_processes_resumes_on_other_meshes(runs):
    facts, restored = runs["restore"]
    trained = runs["train_0"][1]["trained"]
    for name in ["state fsdp+lang_1x4x1", "state one device"]:
        assert facts[name], name  # placed as the target says: its shardings, or one device
        assert max_diff(restored[name], trained) == 0.0, name
    for process in ("train_0", "train_1"):
        assert runs[process][0]["state_back_shardings"]
    assert max_diff(runs["train_0"][1]["state_back"], trained) == 0.0
