"""Pre-training step time on 1 vs 8 simulated CPU devices, by sharding preset (not judged).

    python benchmarks/sharded_step.py [--quick] [--repeats 5]

The bundled model's shape (hidden 256, 4 layers, 4 heads, FFN 1024, 16 languages, vocabulary
20000), batches of 32 x 128 random rows mixing languages, `make_pretrain_step` (masks drawn in
the step, AdamW, everything trains). Each mesh runs in a subprocess of its own, since the device
count is fixed when jax starts (`--xla_force_host_platform_device_count`): one device, then 8
devices as `"data"` 8x1x1, `"fsdp"` 1x8x1 and `"fsdp_tensor"` 2x2x2, each stepped through
`xp.shard_train_step`. Reports the median step time and its ratio to one device, measured in
one run, and writes them to BENCHMARKS.md.

Simulated devices share this machine's cores: the 8-device rows measure the cost of the
partitioned program (collectives as memory copies, 8 small matmuls for one big one), not a
speed-up. On real accelerators each device brings its own compute; the ratio here only says
the sharded path works and what its bookkeeping costs on one host.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

BUNDLED = dict(hidden=256, layers=4, heads=4, intermediate=1024, vocab_size=20000, batch=32,
               length=128)  # fmt: skip
QUICK = dict(hidden=32, layers=2, heads=2, intermediate=64, vocab_size=512, batch=8, length=32)
MESHES = [  # (name, devices, preset, data, fsdp, tensor)
    ("one device", 1, None, 1, 1, 1),
    ('"data" 8x1x1', 8, "data", 8, 1, 1),
    ('"fsdp" 1x8x1', 8, "fsdp", 1, 8, 1),
    ('"fsdp_tensor" 2x2x2', 8, "fsdp_tensor", 2, 2, 2),
]


def child(shape: dict, preset: str | None, mesh_shape: list[int], repeats: int) -> dict:
    """Time the step in this process (its device count set by the parent); JSON-ready."""
    import jax

    import xmod_jax as xj
    from xmod_jax import parallel as xp
    from xmod_jax.train.freezing import freeze_labels
    from xmod_jax.train.masking import MaskingSpec
    from xmod_jax.train.pretrain_init import pretraining_config
    from xmod_jax.train.pretraining import (
        PretrainConfig,
        make_pretrain_optimizer,
        make_pretrain_step,
    )

    languages = [f"l{i:02d}_XX" for i in range(16)]
    config = pretraining_config(
        shape["vocab_size"], languages, hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"], seq_len=shape["length"],
        num_attention_heads=shape["heads"], intermediate_size=shape["intermediate"],
    )  # fmt: skip
    model = xj.XmodForMaskedLM(config)
    params = model.init_params(0)
    tx = make_pretrain_optimizer(params, PretrainConfig(steps=1000, warmup_steps=10))
    spec = MaskingSpec(mask_id=3, vocab_size=shape["vocab_size"], special_ids=(0, 1, 2),
                       first_regular_id=4)  # fmt: skip
    step = make_pretrain_step(model, tx, freeze_labels(params, None), spec)
    state = xj.TrainState.create(params, tx)
    if preset is not None:
        mesh, rules = xp.make_mesh(*mesh_shape), xp.sharding_rules(preset)
        shardings = xp.train_state_shardings(state, model, mesh, rules)
        state = xp.shard(state, shardings)
        step = xp.shard_train_step(step, shardings, mesh, rules)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(5, shape["vocab_size"], (shape["batch"], shape["length"])),
        "attention_mask": np.ones((shape["batch"], shape["length"]), np.int32),
        "lang_ids": rng.integers(0, len(languages), shape["batch"]).astype(np.int32),
    }
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    held = max(xp.bytes_per_device(state.params).values()) if preset else None
    return {
        "devices": jax.device_count(),
        "step_s": statistics.median(times),
        "first_call_s": compile_s,
        "loss": float(metrics["loss"]),
        "param_bytes_per_device": held or sum(x.nbytes for x in jax.tree.leaves(state.params)),
    }


def run_mesh(args, devices: int, preset: str | None, mesh_shape: tuple[int, ...]) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    )
    command = [sys.executable, __file__, "--child", json.dumps([preset, list(mesh_shape)]),
               "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{preset} {mesh_shape} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a toy shape, to check the script")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = QUICK if args.quick else BUNDLED
    if args.child:
        preset, mesh_shape = json.loads(args.child)
        print(json.dumps(child(shape, preset, mesh_shape, args.repeats)))
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import machine, write_section

    results = {name: run_mesh(args, d, p, s) for name, d, p, *s in MESHES}
    base = results["one device"]["step_s"]
    tokens = shape["batch"] * shape["length"]
    lines = [
        "## Pre-training step on 8 simulated devices",
        "",
        f"`python benchmarks/sharded_step.py`, {datetime.date.today()}. "
        f"Machine: {machine()}. Model: hidden {shape['hidden']}, {shape['layers']} layers, "
        f"vocabulary {shape['vocab_size']}, 16 languages; batches of {shape['batch']} x "
        f"{shape['length']} tokens; median of {args.repeats} steps after the first call. "
        "Simulated devices share the host's cores: not a speed-up measurement (see "
        "benchmarks/sharded_step.py).",
        "",
        "| mesh | devices | step (ms) | tokens/s | step time / one device | first call (s) | "
        "parameter bytes per device | loss, last step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['devices']} | {1000 * r['step_s']:.0f} | {tokens / r['step_s']:,.0f} "
            f"| {r['step_s'] / base:.2f}x | {r['first_call_s']:.1f} | "
            f"{r['param_bytes_per_device']:,} | {r['loss']:.4f} |"
        )
    if args.quick:
        print("\n".join(lines))
    else:
        write_section("sharded-step", "\n".join(lines))


if __name__ == "__main__":
    main()
