"""Pre-training step: ours (masks drawn in jit, logits at masked positions) vs transformers' torch.

    python benchmarks/pretrain_step.py [--quick] [--repeats 5] [--batch 32] [--length 128]

`XmodForMaskedLM` at the bundled model's shape by default (hidden 256, 4 layers, 4 heads, FFN
1024, pre-LN, 24 languages, vocabulary 20000, no dropout), batches of 32 x 128 rows mixing
languages; `--quick` is a toy shape for checking that the script runs. The rows are packed from
the committed corpus sample (tests/data/corpus_sample), tokenized with `--vocab` (data/vocab);
without that folder, or with a model vocabulary other than its size, they are random ids.

Ours: `make_pretrain_step`, jitted with the state donated: it draws the masks inside jit and
projects onto the vocabulary at the masked positions only; AdamW from
`make_pretrain_optimizer` (betas 0.9 / 0.98, eps 1e-6, weight decay 0.01 off biases and
LayerNorm scales, clipping at 1.0, warmup-stable-decay). Also the same with `scan_layers=True`.
Theirs: transformers' `XmodForMaskedLM` loaded from our `save_pretrained` folder (the same init),
fed the same rows with the very masks our step draws at that step (masked `input_ids`, `labels`
-100 elsewhere), so it projects every position onto the vocabulary, as transformers does;
`torch.optim.AdamW` with the same hyper-parameters and decay groups, `clip_grad_norm_` 1.0 and
the same schedule as a `LambdaLR`; 2 torch threads. Reports tokens/s (batch x length per step)
and the ratio, measured in one run, and the host's data time (`MixedLanguageBatches.batch(step)`)
as a fraction of our step time; writes them to BENCHMARKS.md. The first step's losses, printed,
show that both sides do the same work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from common import ROOT, interleaved, machine, write_section

import xmod_jax as xj
from xmod_jax.nn.layouts import stack_layers
from xmod_jax.train.freezing import freeze_labels
from xmod_jax.train.masking import MaskingSpec
from xmod_jax.train.mlm_data import MixedLanguageBatches, corpus_rows
from xmod_jax.train.pretrain_init import pretraining_config
from xmod_jax.train.pretraining import (
    PretrainConfig,
    make_pretrain_optimizer,
    make_pretrain_step,
    masking_transform,
)
from xmod_jax.train.steps import PREPARE_STREAM, TrainState

SAMPLE = os.path.join(ROOT, "tests", "data", "corpus_sample")
LANGUAGES = """cs_CZ da_DK de_DE en_XX es_XX fi_FI fr_XX hu_HU it_IT ja_XX ko_KR nl_XX no_XX pl_PL
    pt_XX ru_RU sk_SK sr_RS sv_SE tr_TR uk_UA vi_VN zh_CN zh_TW""".split()  # the bundled model's
BUNDLED = dict(hidden=256, layers=4, heads=4, intermediate=1024, vocab_size=20000, batch=32,
               length=128, repeats=5)  # fmt: skip
QUICK = dict(hidden=32, layers=2, heads=2, intermediate=64, vocab_size=20000, batch=8,
             length=32, repeats=3)  # fmt: skip
BOS, PAD, EOS, UNK = 0, 1, 2, 3
BUDGET = PretrainConfig(steps=1000, learning_rate=1e-3, warmup_steps=100)


def sample_rows(args: argparse.Namespace) -> tuple[list[np.ndarray], str]:
    """Packed training rows of every language, and where they came from."""
    vocab = os.path.join(ROOT, args.vocab)
    if os.path.isdir(vocab) and os.path.isdir(SAMPLE):
        tokenizer = xj.XmodTokenizer.from_pretrained(vocab)
        if len(tokenizer) == args.vocab_size:
            rows = corpus_rows(SAMPLE, "train", tokenizer, args.length, languages=LANGUAGES)
            return list(rows.values()), f"the corpus sample tokenized with {args.vocab}"
    rng = np.random.default_rng(0)
    rows = []
    for _ in LANGUAGES:
        ids = rng.integers(UNK + 1, args.vocab_size - 1, (64, args.length)).astype(np.int32)
        ids[:, 0] = BOS
        rows.append(ids)
    return rows, "random ids (no corpus sample or vocabulary of this size)"


def dense_labels(positions: np.ndarray, labels: np.ndarray, length: int) -> np.ndarray:
    """[B, K] picked positions and labels (-100 in unused slots) -> torch's labels [B, S]."""
    dense = np.full((len(positions), length), -100, np.int64)
    np.put_along_axis(dense, positions, labels, axis=1)  # positions are distinct per row
    return dense


def torch_optimizer(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, object]:
    """AdamW as ours: no weight decay on biases and LayerNorm weights; warmup, the peak held,
    then linear decay over the last `decay_fraction` of the steps after warmup."""
    norm_weights = {
        id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)
    }  # fmt: skip
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or id(p) in norm_weights else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=BUDGET.learning_rate, betas=(0.9, 0.98), eps=1e-6,
    )  # fmt: skip
    warmup = BUDGET.warmup_steps
    decay = max(1, round(BUDGET.decay_fraction * (BUDGET.steps - warmup)))

    def factor(step: int) -> float:
        return min((step + 1) / warmup, 1.0, max(0.0, (BUDGET.steps - step) / decay))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a toy shape, to check the script")
    for name, value in BUNDLED.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                            help=f"default {value} ({QUICK[name]} with --quick)")  # fmt: skip
    parser.add_argument("--vocab", default="data/vocab", help="tokenizer folder for the sample")
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else BUNDLED).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    torch.set_num_threads(2)
    config = pretraining_config(
        args.vocab_size, LANGUAGES, hidden_size=args.hidden, num_hidden_layers=args.layers,
        seq_len=args.length, num_attention_heads=args.heads, intermediate_size=args.intermediate,
    )  # fmt: skip
    model = xj.XmodForMaskedLM(config)
    params = model.init_params(0)
    spec = MaskingSpec(
        mask_id=config.vocab_size - 1, vocab_size=config.vocab_size,
        special_ids=(BOS, PAD, EOS, UNK), first_regular_id=UNK + 1,
    )  # fmt: skip
    rows, source = sample_rows(args)
    batches = MixedLanguageBatches(rows, config.lang_ids(LANGUAGES), args.batch, pad_id=PAD)
    calls = args.repeats + 1  # interleaved() warms each contender up with one call
    host = [batches.batch(step) for step in range(calls)]

    contenders, first_loss = {}, {}
    for name, variant in (("ours", model), ("ours, scan", model.clone(scan_layers=True))):
        # each variant owns its arrays: the step donates (consumes) its state
        step_params = jax.tree.map(jnp.copy, params if name == "ours" else stack_layers(params))
        tx = make_pretrain_optimizer(step_params, BUDGET)
        labels = freeze_labels(step_params, ((".*", "trainable"),))
        step_fn = make_pretrain_step(variant, tx, labels, spec)
        run = {"state": TrainState.create(step_params, tx, seed=0), "calls": 0}
        # the masks' key (seed 0 for both variants); a copy, as the first call donates the state
        state_rng = np.asarray(run["state"].rng)

        def ours(step_fn=step_fn, run=run, name=name):
            run["state"], metrics = step_fn(run["state"], host[run["calls"]])
            if run["calls"] == 0:
                first_loss[name] = metrics["loss"]
            run["calls"] += 1
            return metrics["loss"]

        contenders[name] = ours

    @jax.jit
    def masks_at(step, batch):
        """The masked batch our step draws at `step` (the key as in `make_train_step`)."""
        key = jax.random.fold_in(jax.random.wrap_key_data(state_rng), step)
        return masking_transform(spec)(batch, jax.random.fold_in(key, PREPARE_STREAM))

    torch_batches = []
    for step, batch in enumerate(host):
        masked = jax.device_get(masks_at(step, batch))
        torch_batches.append({
            "input_ids": torch.tensor(masked["input_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(batch["attention_mask"], dtype=torch.long),
            "lang_ids": torch.tensor(batch["lang_ids"], dtype=torch.long),
            "labels": torch.tensor(
                dense_labels(masked["logits_positions"], masked["labels"], args.length)
            ),
        })  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, params)
        reference = transformers.XmodForMaskedLM.from_pretrained(folder).train()
    optimizer, scheduler = torch_optimizer(reference)
    theirs_calls = {"n": 0}

    def theirs():
        optimizer.zero_grad(set_to_none=True)
        loss = reference(**torch_batches[theirs_calls["n"]]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if theirs_calls["n"] == 0:
            first_loss["torch"] = loss.item()
        theirs_calls["n"] += 1
        return loss.detach()

    seconds = interleaved({**contenders, "torch": theirs}, args.repeats)

    data_times = []
    for step in range(calls, calls + 50):
        start = time.perf_counter()
        batches.batch(step)
        data_times.append(time.perf_counter() - start)
    data = statistics.median(data_times)

    tokens = args.batch * args.length
    table = [
        f"| {name} | {tokens / s:,.0f} | {s * 1e3:,.0f} ms | "
        + ("–" if name == "torch" else f"**{seconds['torch'] / s:.2f}x**")
        + " |"
        for name, s in seconds.items()
    ]
    losses = ", ".join(f"{k} {float(v):.5f}" for k, v in first_loss.items())
    shape = "a toy shape (`--quick`)" if args.quick else "the bundled model's shape"
    caveat = (
        "\nAt this toy shape per-call overhead outweighs the arithmetic: the figures of the"
        "\nbundled shape (run without `--quick`) are the ones to compare.\n"
        if args.quick
        else ""
    )
    command = "python benchmarks/pretrain_step.py" + (" --quick" if args.quick else "")
    body = f"""## Pre-training step

`{command}`, {time.strftime("%Y-%m-%d")}. {machine()}.
`XmodForMaskedLM`, {shape}: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, FFN
{args.intermediate}, pre-LN, {len(LANGUAGES)} languages, vocabulary {args.vocab_size}, no dropout;
batch {args.batch} x {args.length} mixing languages, rows from {source}. MLM with the same
masks on both sides (ours draws them in jit and projects at the masked positions only; torch
gets them as labels and projects every position); AdamW, clipping, warmup-stable-decay schedule.
Median of {args.repeats} interleaved repeats; ratio = torch's time / ours.

| step | tokens/s | time | ratio vs torch |
|---|---|---|---|
{chr(10).join(table)}

First step's loss: {losses}. Host data time (`MixedLanguageBatches.batch(step)`, median of 50):
{data * 1e3:.2f} ms, {data / seconds["ours"]:.2%} of our step time.
{caveat}"""
    write_section("pretrain-step", body)


if __name__ == "__main__":
    main()
