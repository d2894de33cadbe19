"""Pre-train a small X-MOD on the Debian corpus with the library's recipe, resumably.

    python corpus/build.py --out data/corpus             # the corpus (once)
    python corpus/train_vocab.py --corpus data/corpus --out data/vocab
    python examples/pretrain.py --workdir runs/bundle --export runs/bundle/model

The defaults are the bundled model's run (`xj.BUNDLED_MODEL`, about 52 min on 2 cores). Every
language with at least `--min-chars` characters of training text gets an adapter (16 in the
corpus); every batch mixes languages, each row routed
to its own adapter (`xmod_jax.train.pretraining`). Rows are packed from each language's first
`--max-chars` characters of training text, while the sampling probabilities p_l ∝ n_l^alpha use
the full corpus sizes (training characters per language in the manifest), so the cap only limits how
much distinct text a language brings. The tokenized rows are cached in `WORKDIR/rows.npz`.
Stopping the script (Ctrl-C, a killed session) loses at most `--checkpoint-every` steps: run the
same command again to resume, bit-exact. `--export` writes the final params as a transformers
folder (`--dtype` weights) with the tokenizer files, in which dropout is set back to 0.1 for
fine-tuning (pre-training runs without dropout: the run sees each token about once).
`--shared` pre-trains the baseline of X-MOD's modular-vs-shared comparison: the same trunk, data,
sampling, masks and steps, but one adapter (named `xx_XX`) that every language's rows go
through, so the compute per token is the same as the modular model's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import xmod_jax as xj
from xmod_jax.train.masking import MaskingSpec
from xmod_jax.train.mlm_data import MixedLanguageBatches, corpus_rows, language_probabilities
from xmod_jax.train.pretrain_init import pretraining_config, with_local_attention_init
from xmod_jax.train.pretraining import (
    HeldOutMLM,
    PretrainConfig,
    pretrain,
    unigram_log_probs,
    with_unigram_output_bias,
)

SHARED = "xx_XX"  # the shared baseline's one adapter


def train_chars(corpus: str) -> dict[str, int]:
    """Training characters per language, from the corpus's manifest.json."""
    with open(os.path.join(corpus, "manifest.json"), encoding="utf-8") as f:
        languages = json.load(f)["languages"]
    return {code: entry["totals"]["train"]["chars"] for code, entry in languages.items()}


def cached_rows(path: str) -> dict[str, dict[str, np.ndarray]]:
    """A run's rows cache (`WORKDIR/rows.npz`) as {"train": {code: rows}, "valid": {...}}."""
    data = np.load(path)
    out: dict[str, dict[str, np.ndarray]] = {"train": {}, "valid": {}}
    for key in data.files:
        split, code = key.split("/")
        out[split][code] = data[key]
    return out


def load_rows(args, tokenizer) -> dict[str, dict[str, np.ndarray]]:
    """{"train": {code: rows}, "valid": {code: rows}}, cached in WORKDIR/rows.npz."""
    cache = os.path.join(args.workdir, "rows.npz")
    if os.path.exists(cache):
        return cached_rows(cache)
    t0 = time.perf_counter()
    train = corpus_rows(
        args.corpus, "train", tokenizer, args.seq_len,
        languages=args.languages, max_chars=args.max_chars,
    )  # fmt: skip
    valid = corpus_rows(args.corpus, "valid", tokenizer, args.seq_len, languages=list(train))
    valid = {code: rows[: args.eval_rows] for code, rows in valid.items()}
    arrays = {f"{split}/{code}": r for split, part in (("train", train), ("valid", valid))
              for code, r in part.items()}  # fmt: skip
    np.savez(cache + ".tmp.npz", **arrays)
    os.replace(cache + ".tmp.npz", cache)
    print(f"tokenized and packed in {time.perf_counter() - t0:.0f} s")
    return {"train": train, "valid": valid}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="data/corpus", help="corpus/build.py's output")
    parser.add_argument("--vocab", default="data/vocab", help="corpus/train_vocab.py's output")
    parser.add_argument("--workdir", required=True, help="checkpoints, log.jsonl, rows.npz")
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--stop-after", type=int, default=None, help="end after N steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=None, help="FFN width (default 4 x hidden)")
    parser.add_argument("--lr", type=float, default=7e-4)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--decay-fraction", type=float, default=0.2)
    parser.add_argument("--alpha", type=float, default=0.3, help="language sampling exponent")
    parser.add_argument("--languages", nargs="*", help="codes (default: see --min-chars)")
    parser.add_argument(
        "--min-chars", type=int, default=1_000_000,
        help="by default, every language with at least this much training text",
    )  # fmt: skip
    parser.add_argument("--max-chars", type=int, default=4_000_000, help="per language")
    parser.add_argument("--eval-rows", type=int, default=48, help="held-out rows per language")
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument(
        "--unigram-bias", action=argparse.BooleanOptionalAction, default=True,
        help="start the output bias at the training text's unigram log-probabilities",
    )  # fmt: skip
    parser.add_argument(
        "--local-attention", action=argparse.BooleanOptionalAction, default=True,
        help="start attention local: sinusoidal positions, heads aimed at the neighbours",
    )  # fmt: skip
    parser.add_argument(
        "--shared",
        action="store_true",
        help=f"the shared baseline: one adapter ({SHARED}) for every language, same data and steps",
    )
    parser.add_argument("--export", default=None, help="write a transformers folder here")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    args = parser.parse_args(argv)

    os.makedirs(args.workdir, exist_ok=True)
    chars = train_chars(args.corpus)
    if args.languages is None:
        args.languages = sorted(c for c, n in chars.items() if n >= args.min_chars)
    tokenizer = xj.XmodTokenizer.from_pretrained(args.vocab)
    rows = load_rows(args, tokenizer)
    codes = sorted(rows["train"])
    adapters = [SHARED] if args.shared else codes
    config = pretraining_config(
        len(tokenizer), adapters, hidden_size=args.hidden, num_hidden_layers=args.layers,
        seq_len=args.seq_len, intermediate_size=args.ffn,
    )  # fmt: skip
    model = xj.XmodForMaskedLM(config)
    spec = MaskingSpec.for_tokenizer(tokenizer)
    sizes = [chars[c] for c in codes]
    batches = MixedLanguageBatches(
        [rows["train"][c] for c in codes],
        config.lang_ids([SHARED] * len(codes) if args.shared else codes),
        args.batch,
        pad_id=tokenizer.pad_token_id,
        probabilities=language_probabilities(sizes, args.alpha),
    )
    with open(os.path.join(args.workdir, "run.json"), "w", encoding="utf-8") as f:
        json.dump(vars(args) | {"languages": codes}, f, indent=1)
    routes = dict.fromkeys(codes, SHARED) if args.shared else None
    held_out = HeldOutMLM(
        model, rows["valid"], spec, pad_id=tokenizer.pad_token_id, adapters=routes
    )
    budget = PretrainConfig(
        steps=args.steps,
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        decay_fraction=args.decay_fraction,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
    )
    params = model.init_params(budget.seed)
    if args.unigram_bias:
        params = with_unigram_output_bias(params, unigram_log_probs(rows["train"], spec))
    if args.local_attention:
        params = with_local_attention_init(params, config.pad_token_id)
    state, _ = pretrain(
        model, params, batches, spec, budget, args.workdir,
        held_out=held_out, stop_after=args.stop_after,
    )  # fmt: skip
    if args.export and int(state.step) == args.steps:
        shipped = dataclasses.replace(
            config, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1
        )
        params = jax.tree.map(lambda x: x.astype(getattr(jnp, args.dtype)), state.params)
        xj.XmodForMaskedLM(shipped).save_pretrained(args.export, params)
        # the tokenizer's length limit is the model's (transformers' tokenizer reads it too)
        limit = config.max_position_embeddings - 2
        xj.XmodTokenizer.from_pretrained(args.vocab, model_max_length=limit).save_pretrained(
            args.export
        )
        print(f"wrote {args.export}")


if __name__ == "__main__":
    main()
