"""Inference throughput: our jitted forward vs transformers' torch eager forward, same weights.

    python benchmarks/inference.py [--repeats 3] [--dtype float32|bfloat16]

Model: xmod-base's shape (12 x 768, 81 languages) with the vocabulary cut to 8192 rows, random
weights saved by us and loaded into `transformers.XmodModel` (torch eager, its default SDPA
attention, all cores). Grid: batch x length 1x128, 8x128, 32x128, 8x512, each with one language
per batch, 8 languages mixed, and every row a different language. Reports tokens/s (median of
interleaved repeats) and the ratio ours / torch, plus the cost of mixing languages, and writes
the table to BENCHMARKS.md. About 12 minutes on a 2-core CPU at fp32.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from common import interleaved, language_mix, machine, random_ids, write_section, xmod_base_config

import xmod_jax as xj

GRID = [(1, 128), (8, 128), (32, 128), (8, 512)]
MIXES = ["one", "8 mixed", "all different"]


def gemm_ceiling(repeats: int) -> float:
    """Speed of XLA's fp32 GEMM relative to torch's on one FFN-shaped product."""
    rng = np.random.default_rng(0)
    a, b = rng.random((1024, 768), np.float32), rng.random((768, 3072), np.float32)
    ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.as_tensor(a), torch.as_tensor(b)
    matmul = jax.jit(jnp.matmul)

    def many(fn):
        return lambda: [fn() for _ in range(20)][-1]

    seconds = interleaved(
        {"ours": many(lambda: matmul(ja, jb)), "torch": many(lambda: ta @ tb)}, repeats * 3
    )
    return seconds["torch"] / seconds["ours"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    config = xmod_base_config()
    model = xj.XmodModel(config, dtype=args.dtype)
    params = model.init_params(0)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, params)
        reference = transformers.XmodModel.from_pretrained(
            folder, dtype=getattr(torch, args.dtype)
        ).eval()

    def ours_for(m):
        forward = jax.jit(lambda p, ids, lang: m.apply({"params": p}, ids, lang_ids=lang))
        return lambda ids, lang: forward(params, ids, lang).last_hidden_state

    ours, ours_auto = ours_for(model), ours_for(model.clone(routing="auto"))
    rows, by_cell = [], {}
    for batch, length in GRID:
        ids = random_ids(config, batch, length)
        for mix in MIXES:
            if batch == 1 and mix != "one":
                continue
            lang = language_mix(batch, mix)
            ids_t, lang_t = torch.as_tensor(ids), torch.as_tensor(lang)

            def theirs(ids_t=ids_t, lang_t=lang_t):
                with torch.inference_mode():
                    return reference(input_ids=ids_t, lang_ids=lang_t).last_hidden_state

            contenders = {"ours": lambda ids=ids, lang=lang: ours(ids, lang), "torch": theirs}
            if mix == "one":
                contenders["ours auto"] = lambda ids=ids, lang=lang: ours_auto(ids, lang)
            seconds = interleaved(contenders, args.repeats)
            tokens = batch * length
            ratio = seconds["torch"] / seconds["ours"]
            by_cell[(batch, length, mix)] = seconds["ours"]
            auto = f"{tokens / seconds['ours auto']:,.0f}" if "ours auto" in seconds else "–"
            rows.append(
                f"| {batch}x{length} | {mix} | {tokens / seconds['ours']:,.0f} | {auto} | "
                f"{tokens / seconds['torch']:,.0f} | **{ratio:.2f}x** |"
            )
            print(rows[-1], flush=True)
    gemm = gemm_ceiling(args.repeats)
    mixing = [
        f"{b}x{t} {m}: {by_cell[(b, t, m)] / by_cell[(b, t, 'one')]:.2f}x"
        for b, t in GRID
        for m in MIXES[1:]
        if (b, t, m) in by_cell
    ]
    body = f"""## Inference throughput ({args.dtype})

`python benchmarks/inference.py --dtype {args.dtype}`. {machine()}.
xmod-base shape (12 x 768, 81 languages) with the vocabulary cut to 8192 rows (embedding lookups
only; the encoder's cost is unchanged). transformers runs torch eager (default SDPA attention);
ours is `jax.jit` of `XmodModel.apply` (gather routing, fused attention). Tokens/s are medians
of {args.repeats} interleaved repeats; the ratio is ours / torch.

| batch x length | languages | ours tok/s | ours, routing="auto" | torch tok/s | ratio |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Cost of mixing languages (ours, time vs the one-language batch): {", ".join(mixing)}.

The ceiling on this backend: one fp32 GEMM of the FFN's shape ([1024, 768] x [768, 3072]) runs
at {gemm:.2f}x torch's speed in XLA (torch uses its own BLAS), so the forward pass, which is
almost all GEMMs, cannot beat torch by much more than that here.
"""
    write_section(f"inference-{args.dtype}", body)


if __name__ == "__main__":
    jnp.zeros(1).block_until_ready()
    main()
