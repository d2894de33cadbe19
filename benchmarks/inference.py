"""Inference throughput: our jitted forward vs transformers' torch eager forward, same weights.

    python benchmarks/inference.py [--repeats 5] [--dtype float32|bfloat16] [--grid 64x512,...]
                                   [--peak-tflops 990]

Model: xmod-base's shape (12 x 768, 81 languages) with the vocabulary cut to 8192 rows, random
weights saved by us and loaded into `transformers.XmodModel` (torch eager, its default SDPA
attention, all cores). Grid: batch x length 1x128, 8x128, 32x128, 8x512, each with one language
per batch, 8 languages mixed, and every row a different language. Reports tokens/s (median of
interleaved repeats) and the ratio ours / torch, plus the cost of mixing languages, and writes
the table to BENCHMARKS.md. About 12 minutes on a 2-core CPU at fp32. On a GPU, torch runs on
CUDA too; `--peak-tflops` (the device's dense peak at the chosen dtype) adds model FLOP
utilisation, counting 2 FLOPs per weight per token plus attention's 4 T D per layer per token.
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


def flops_per_token(config: xj.XmodConfig, length: int) -> float:
    """Forward FLOPs per token: 2 per weight used (attention, FFN, one adapter) plus the
    attention scores and weighted sum (4 T D per layer)."""
    d, f, r = config.hidden_size, config.intermediate_size, config.adapter_size
    per_layer = 2 * (4 * d * d + 2 * d * f + 2 * d * r) + 4 * length * d
    return config.num_hidden_layers * per_layer


def gemm_ceiling(repeats: int, device: str) -> float:
    """Speed of XLA's fp32 GEMM relative to torch's on one FFN-shaped product."""
    rng = np.random.default_rng(0)
    a, b = rng.random((1024, 768), np.float32), rng.random((768, 3072), np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ta, tb = torch.as_tensor(a, device=device), torch.as_tensor(b, device=device)
    matmul = jax.jit(jnp.matmul)

    def many(fn):
        def run():
            out = [fn() for _ in range(20)][-1]
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    seconds = interleaved(
        {"ours": many(lambda: matmul(ja, jb)), "torch": many(lambda: ta @ tb)}, repeats * 3
    )
    return seconds["torch"] / seconds["ours"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--grid", default=None, help="e.g. 8x128,64x512 (default: the issue's)")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    grid = (
        GRID if args.grid is None else [tuple(map(int, g.split("x"))) for g in args.grid.split(",")]
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(os.cpu_count())
    config = xmod_base_config()
    model = xj.XmodModel(config, dtype=args.dtype)
    params = model.init_params(0)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, params)
        reference = (
            transformers.XmodModel.from_pretrained(folder, dtype=getattr(torch, args.dtype))
            .eval()
            .to(device)
        )

    def ours_for(m):
        forward = jax.jit(lambda p, ids, lang: m.apply({"params": p}, ids, lang_ids=lang))
        return lambda ids, lang: forward(params, ids, lang).last_hidden_state

    ours, ours_auto = ours_for(model), ours_for(model.clone(routing="auto"))
    rows, by_cell = [], {}
    for batch, length in grid:
        ids = random_ids(config, batch, length)
        for mix in MIXES:
            if batch == 1 and mix != "one":
                continue
            lang = language_mix(batch, mix)
            ids_t, lang_t = (
                torch.as_tensor(ids, device=device),
                torch.as_tensor(lang, device=device),
            )

            def theirs(ids_t=ids_t, lang_t=lang_t):
                with torch.inference_mode():
                    out = reference(input_ids=ids_t, lang_ids=lang_t).last_hidden_state
                if device == "cuda":
                    torch.cuda.synchronize()
                return out

            contenders = {"ours": lambda ids=ids, lang=lang: ours(ids, lang), "torch": theirs}
            if mix == "one":
                contenders["ours auto"] = lambda ids=ids, lang=lang: ours_auto(ids, lang)
            seconds = interleaved(contenders, args.repeats)
            tokens = batch * length
            ratio = seconds["torch"] / seconds["ours"]
            by_cell[(batch, length, mix)] = seconds["ours"]
            auto = f"{tokens / seconds['ours auto']:,.0f}" if "ours auto" in seconds else "–"
            mfu = ""
            if args.peak_tflops:
                flops = tokens * flops_per_token(config, length) / seconds["ours"]
                mfu = f" {100 * flops / (args.peak_tflops * 1e12):.1f}% |"
            rows.append(
                f"| {batch}x{length} | {mix} | {tokens / seconds['ours']:,.0f} | {auto} | "
                f"{tokens / seconds['torch']:,.0f} | **{ratio:.2f}x** |{mfu}"
            )
            print(rows[-1], flush=True)
    gemm = gemm_ceiling(args.repeats, device)
    mfu_head, mfu_rule = (" ours MFU |", "---|") if args.peak_tflops else ("", "")
    mixing = [
        f"{b}x{t} {m}: {by_cell[(b, t, m)] / by_cell[(b, t, 'one')]:.2f}x"
        for b, t in grid
        for m in MIXES[1:]
        if (b, t, m) in by_cell
    ]
    body = f"""## Inference throughput ({args.dtype})

`python benchmarks/inference.py --dtype {args.dtype}`. {machine()}.
xmod-base shape (12 x 768, 81 languages) with the vocabulary cut to 8192 rows (embedding lookups
only; the encoder's cost is unchanged). transformers runs torch eager (default SDPA attention);
ours is `jax.jit` of `XmodModel.apply` (gather routing, fused attention). Tokens/s are medians
of {args.repeats} interleaved repeats; the ratio is ours / torch.

| batch x length | languages | ours tok/s | ours, routing="auto" | torch tok/s | ratio |{mfu_head}
|---|---|---|---|---|---|{mfu_rule}
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
