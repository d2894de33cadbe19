"""Compile time (unrolled vs scan, as depth grows) and the memory of a compiled forward pass.

    python benchmarks/compile_memory.py

Compiles `XmodModel` forward passes (8 x 128, xmod-base width, vocabulary cut to 8192) at 3, 6
and 12 layers, unrolled and with `scan_layers`, plus the xmod-base fine-tuning step, and reports
XLA's own memory analysis of the compiled 12-layer forward (arguments, outputs, temporaries).
Writes the tables to BENCHMARKS.md. About 3 minutes on a 2-core CPU.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from common import language_mix, machine, peak_rss_gib, random_ids, write_section, xmod_base_config

import xmod_jax as xj


def compile_seconds(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start, compiled


def main() -> None:
    rows, memory = [], ""
    for layers in (3, 6, 12):
        config = xmod_base_config(num_hidden_layers=layers)
        ids = jnp.asarray(random_ids(config, 8, 128))
        lang = jnp.asarray(language_mix(8, "8 mixed"))
        cells = []
        for scan in (False, True):
            model = xj.XmodModel(config, scan_layers=scan)
            shapes = model.param_shapes()
            forward = lambda p, i, lang, m=model: m.apply({"params": p}, i, lang_ids=lang)  # noqa: E731
            seconds, compiled = compile_seconds(forward, shapes, ids, lang)
            cells.append(f"{seconds:.1f} s")
            if layers == 12 and not scan:
                stats = compiled.memory_analysis()
                memory = (
                    f"arguments {stats.argument_size_in_bytes / 2**20:,.0f} MiB, outputs "
                    f"{stats.output_size_in_bytes / 2**20:,.1f} MiB, temporaries "
                    f"{stats.temp_size_in_bytes / 2**20:,.0f} MiB"
                )
        rows.append(f"| {layers} | {cells[0]} | {cells[1]} |")
        print(rows[-1], flush=True)

    config = xmod_base_config(num_labels=3)
    train_rows = []
    for scan in (False, True):
        model = xj.XmodForSequenceClassification(config, scan_layers=scan)
        params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), model.param_shapes())
        tx = xj.make_optimizer(params, learning_rate=1e-5)
        step = xj.make_train_step(model, tx, xj.freeze_labels(params, "xmod_paper"))
        state = xj.TrainState.create(params, tx)
        batch = {
            "input_ids": random_ids(config, 8, 128),
            "lang_ids": language_mix(8, "8 mixed"),
            "labels": jnp.zeros(8, jnp.int32),
        }
        start = time.perf_counter()
        step.lower(state, batch).compile()
        train_rows.append(f"{'scan' if scan else 'unrolled'} {time.perf_counter() - start:.1f} s")
    body = f"""## Compile time and memory

`python benchmarks/compile_memory.py`. {machine()}.
Forward pass of `XmodModel`, 8 x 128, xmod-base width (vocabulary cut to 8192):

| layers | unrolled compile | scan compile |
|---|---|---|
{chr(10).join(rows)}

xmod-base fine-tuning step (forward + backward + AdamW, paper freezing) compile:
{", ".join(train_rows)}. XLA's memory analysis of the 12-layer forward: {memory}. Peak RSS of
this process: {peak_rss_gib():.2f} GiB.
"""
    write_section("compile-memory", body)


if __name__ == "__main__":
    main()
