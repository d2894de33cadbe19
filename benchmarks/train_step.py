"""Fine-tuning step: forward + backward + AdamW with the paper's freezing, ours vs torch.

    python benchmarks/train_step.py [--repeats 5] [--batch 8] [--length 128]

`XmodForSequenceClassification` at xmod-base's shape (vocabulary cut to 8192 rows), dropout on,
embeddings and every language adapter frozen on both sides: ours with `make_optimizer` (frozen
leaves get no gradient work and no optimizer state) and a jitted, donating `train_step`; torch
with `freeze_embeddings_and_language_adapters()` and `torch.optim.AdamW` (betas 0.9 / 0.98,
eps 1e-6, weight decay 0.01) over the parameters that require grad. Reports steps/s and the
ratio, and writes them to BENCHMARKS.md. About 3 minutes on a 2-core CPU.
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
from xmod_jax.nn.layouts import stack_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    config = xmod_base_config(num_labels=3)
    model = xj.XmodForSequenceClassification(config)
    params = model.init_params(0)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, params)
        reference = transformers.XmodForSequenceClassification.from_pretrained(folder).train()
    reference.freeze_embeddings_and_language_adapters()
    trainable = [p for p in reference.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01
    )

    ids = random_ids(config, args.batch, args.length)
    lang = language_mix(args.batch, "8 mixed")
    labels = np.arange(args.batch) % 3
    batch = {"input_ids": ids, "lang_ids": lang, "labels": labels}
    torch_batch = {k: torch.as_tensor(v) for k, v in batch.items()}

    results = {}
    for name, variant in (("ours", model), ("ours, scan", model.clone(scan_layers=True))):
        # each variant owns its arrays: train steps donate (consume) the state
        step_params = jax.tree.map(jnp.copy, params if name == "ours" else stack_layers(params))
        tx = xj.make_optimizer(step_params, learning_rate=1e-5)
        labels_tree = xj.freeze_labels(step_params, "xmod_paper")
        train_step = xj.make_train_step(variant, tx, labels_tree)
        state = {"value": xj.TrainState.create(step_params, tx)}

        def ours(train_step=train_step, state=state):
            state["value"], metrics = train_step(state["value"], batch)
            return metrics["loss"]

        results[name] = ours

    def theirs():
        optimizer.zero_grad(set_to_none=True)
        loss = reference(**torch_batch).loss
        loss.backward()
        optimizer.step()
        return loss.detach()

    seconds = interleaved({**results, "torch": theirs}, args.repeats)
    rows = [
        f"| {name} | {1 / s:.3f} | **{seconds['torch'] / s:.2f}x** |"
        for name, s in seconds.items()
        if name != "torch"
    ]
    body = f"""## Fine-tuning step

`python benchmarks/train_step.py`. {machine()}.
`XmodForSequenceClassification`, xmod-base shape (vocabulary cut to 8192), batch
{args.batch} x {args.length} with 8 languages, dropout on, paper freezing, AdamW. Median of
{args.repeats} interleaved repeats; torch: {1 / seconds["torch"]:.3f} steps/s.

| ours | steps/s | ratio vs torch |
|---|---|---|
{chr(10).join(rows)}
"""
    write_section("train-step", body)


if __name__ == "__main__":
    main()
