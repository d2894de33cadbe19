"""Mixed precision drift: bf16 compute with float32 parameters vs fp32, on xmod-base's shape.

    python benchmarks/precision.py

Runs `XmodForMaskedLM` (vocabulary cut to 8192, random weights drawn as transformers
initialises them) on 8 x 128 batches of 8 languages in fp32 and with `dtype=bfloat16` (float32
parameters, float32 layer-norm statistics, softmax and logits), and reports how far the last
hidden state and the logits move, and how often the top-1 token agrees. Also the speed ratio of
the two on this backend. Writes the table to BENCHMARKS.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from common import interleaved, language_mix, machine, random_ids, write_section, xmod_base_config

import xmod_jax as xj


def main() -> None:
    config = xmod_base_config()
    fp32 = xj.XmodForMaskedLM(config)
    bf16 = fp32.clone(dtype=jnp.bfloat16)
    params = fp32.init_params(0)
    ids, lang = random_ids(config, 8, 128), language_mix(8, "8 mixed")

    def forward(model):
        run = jax.jit(
            lambda p: model.apply({"params": p}, ids, lang_ids=lang, output_hidden_states=True)
        )
        return lambda: run(params)

    runs = {"fp32": forward(fp32), "bf16": forward(bf16)}
    ref, out = runs["fp32"](), runs["bf16"]()
    hidden_ref = np.asarray(ref.hidden_states[-1], np.float32)
    hidden = np.asarray(out.hidden_states[-1], np.float32)
    logits_ref, logits = np.asarray(ref.logits), np.asarray(out.logits)
    cosine = np.sum(hidden * hidden_ref, -1) / (
        np.linalg.norm(hidden, axis=-1) * np.linalg.norm(hidden_ref, axis=-1)
    )
    top1 = np.mean(np.argmax(logits, -1) == np.argmax(logits_ref, -1))
    seconds = interleaved(runs, 3)
    scale, hidden_diff = np.abs(hidden_ref).max(), np.abs(hidden - hidden_ref)
    body = f"""## Mixed precision (bf16 compute, fp32 parameters)

`python benchmarks/precision.py`. {machine()}.
`XmodForMaskedLM`, xmod-base shape (vocabulary cut to 8192, transformers' random init),
8 x 128 with 8 languages; bf16 vs fp32:

| measure | value |
|---|---|
| last hidden state: max abs difference (largest value {scale:.1f}) | {hidden_diff.max():.3f} |
| last hidden state: mean abs difference | {hidden_diff.mean():.4f} |
| last hidden state: cosine per token (min / mean) | {cosine.min():.5f} / {cosine.mean():.5f} |
| logits: max abs difference | {np.abs(logits - logits_ref).max():.4f} |
| top-1 token agreement | {100 * top1:.2f} % |
| speed, bf16 vs fp32 on this backend | {seconds["fp32"] / seconds["bf16"]:.2f}x |
"""
    write_section("precision", body)


if __name__ == "__main__":
    main()
