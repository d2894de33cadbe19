"""Fine-tune XmodForSequenceClassification the X-MOD way, then evaluate under other languages.

    python examples/finetune_classification.py [--steps 600] [--workdir /tmp/xmod-finetune]

It builds everything offline:
- a small random X-MOD (4 layers, hidden 64, languages en_XX / de_DE / sw_KE) saved as a
  transformers folder and loaded back;
- a synthetic sentiment task: each sentence hides one to three "positive" or "negative" word
  ids among neutral ones, and its label says which kind.

It fine-tunes with the paper's freezing (embeddings and every language adapter frozen), on
English lang ids only, with AdamW (fairseq defaults), warmup and linear decay. A progress bar
shows the loss. The best checkpoint by validation accuracy is saved with orbax, restored, and
then evaluated on held-out data under each language's adapter: zero-shot cross-lingual transfer
is one argument, `lang_ids`.

On a 2-core CPU it runs in about 30 s. Measured there: the loss (mean of 20 steps) falls from
0.69 to 0.24, and held-out accuracy is 0.92 under en_XX (chance: 0.5). de_DE and sw_KE score the
same, 0.92: their adapters are random and frozen, and barely move this untrained model. With a
pretrained X-MOD, each language's adapter carries that language's knowledge.
"""

from __future__ import annotations

import argparse
import tempfile

import jax
import numpy as np
from tqdm.auto import tqdm

import xmod_jax as xj
from xmod_jax.train.steps import batch_indices

LANGUAGES = ["en_XX", "de_DE", "sw_KE"]
VOCAB, POSITIVE, NEGATIVE = 200, range(10, 40), range(40, 70)


def make_task(num_examples: int, seed: int, max_words: int = 20) -> dict[str, np.ndarray]:
    """Sentences `<s> w1 ... wn </s>` padded to max_words + 2: one to three "positive" or
    "negative" words among neutral ones; the label says which kind (1 = positive)."""
    rng = np.random.default_rng(seed)
    ids = np.full((num_examples, max_words + 2), 1, np.int32)  # pad id 1
    labels = rng.integers(0, 2, num_examples).astype(np.int32)
    for i, label in enumerate(labels):
        n = rng.integers(6, max_words + 1)
        k = rng.integers(1, 4)
        cue = rng.choice(POSITIVE if label else NEGATIVE, k)
        words = np.concatenate([cue, rng.integers(70, VOCAB, n - k)])
        rng.shuffle(words)
        ids[i, : n + 2] = [0, *words, 2]
    return {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int32), "labels": labels}


def build_checkpoint(folder: str) -> None:
    config = xj.XmodConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=40,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        languages=LANGUAGES,
    )
    model = xj.XmodForMaskedLM(config)
    model.save_pretrained(folder, model.init_params(0))


def run(
    steps: int = 600, batch_size: int = 32, workdir: str | None = None, quiet: bool = False
) -> dict:
    """Fine-tune and evaluate; returns the losses and the accuracy per language."""
    workdir = workdir or tempfile.mkdtemp(prefix="xmod-finetune-")
    build_checkpoint(f"{workdir}/pretrained")
    model, params = xj.XmodForSequenceClassification.from_pretrained(
        f"{workdir}/pretrained", num_labels=2, id2label={0: "negative", 1: "positive"}
    )
    config = model.config
    train, valid = make_task(2000, seed=1), make_task(500, seed=2)
    english = np.full(batch_size, config.lang_ids("en_XX"))  # train on English only

    labels = xj.freeze_labels(params, "xmod_paper")
    tx = xj.make_optimizer(
        params, learning_rate=2e-3, warmup_steps=steps // 10, total_steps=steps, clip_norm=1.0
    )
    state = xj.TrainState.create(params, tx, seed=0)
    train_step = xj.make_train_step(model, tx, labels)
    eval_step = xj.make_eval_step(model)

    def accuracy(params, data, code) -> float:
        lang_ids = np.full(len(data["labels"]), config.lang_ids(code))
        return float(eval_step(params, {**data, "lang_ids": lang_ids})["accuracy"])

    losses = []
    with xj.TrainCheckpoints(f"{workdir}/checkpoints", keep_last=1, keep_best=1) as checkpoints:
        bar = tqdm(range(steps), desc="fine-tuning", disable=quiet)
        for step in bar:
            idx = batch_indices(0, step, len(train["labels"]), batch_size)
            batch = {k: v[idx] for k, v in train.items()}
            state, metrics = train_step(state, {**batch, "lang_ids": english})
            losses.append(float(metrics["loss"]))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if (step + 1) % (steps // 4) == 0:
                checkpoints.save(state, {"accuracy": accuracy(state.params, valid, "en_XX")})
        checkpoints.wait_until_finished()
        best = checkpoints.best_step()
        restored = checkpoints.restore(jax.eval_shape(lambda: state), step=best)

    test = make_task(1000, seed=3)
    result = {
        "losses": losses,
        "best_step": best,
        "accuracy": {code: accuracy(restored.params, test, code) for code in LANGUAGES},
    }
    if not quiet:
        print(
            f"loss: first 20 steps {np.mean(losses[:20]):.3f}, last 20 {np.mean(losses[-20:]):.3f}"
        )
        print(f"restored the best checkpoint (step {best}); held-out accuracy by adapter:")
        for code, value in result["accuracy"].items():
            print(f"  {code}: {value:.3f}" + ("  (training language)" if code == "en_XX" else ""))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    run(steps=args.steps, workdir=args.workdir)


if __name__ == "__main__":
    main()
