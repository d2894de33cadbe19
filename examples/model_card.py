"""Evaluate a pre-trained X-MOD on the corpus's test split and write its model card.

    python examples/model_card.py --model xmod_jax/models/mini-debian --corpus data/corpus \\
        --workdir runs/mini [--rows-per-language 64]

For every language of the model (on the test split, which no training step saw): masked-token
top-1 accuracy and perplexity with fixed masks (15% of the tokens, all `<mask>`), the unigram
baseline (always the language's most frequent training token; its add-one unigram perplexity),
the context gain (loss with each row's words shuffled minus the loss: 0 for a model that ignores
word order), and the loss through the language's own adapter against the mean over the other
adapters. The whole text-language x adapter loss matrix is drawn as `adapter_losses.png`
(matplotlib, the `plots` extra). Writes `eval.json` and `README.md` into the model folder; the
training facts (steps, tokens seen, wall time) come from WORKDIR/log.jsonl, the corpus sizes
from the corpus manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import xmod_jax as xj
from xmod_jax.train.masking import MaskingSpec
from xmod_jax.train.mlm_data import corpus_rows
from xmod_jax.train.pretraining import HeldOutMLM

QUALITY_RATIO = 3.0  # the accuracy the issue asks for: 3x the unigram baseline


def evaluate(model, params, tokenizer, args) -> dict:
    """Per-language metrics and the adapter loss matrix on the test split."""
    codes = list(model.config.languages)
    seq_len = model.config.max_position_embeddings - 2
    test = corpus_rows(args.corpus, "test", tokenizer, seq_len, languages=codes)
    test = {c: r[: args.rows_per_language] for c, r in test.items()}
    train = corpus_rows(
        args.corpus, "train", tokenizer, seq_len, languages=codes, max_chars=args.unigram_chars
    )
    spec = MaskingSpec.for_tokenizer(tokenizer)
    held = HeldOutMLM(model, test, spec, pad_id=tokenizer.pad_token_id)
    own = held.evaluate(params)
    shuffled = held.evaluate(params, shuffled=True)
    unigram = held.unigram_baseline(train)
    texts, adapters, matrix = held.adapter_matrix(params)
    per_language = {}
    for i, code in enumerate(texts):
        others = [matrix[i, j] for j, a in enumerate(adapters) if a != code]
        per_language[code] = {
            "accuracy": own[code]["accuracy"],
            "perplexity": own[code]["perplexity"],
            "loss": own[code]["loss"],
            "masked_tokens": own[code]["tokens"],
            "unigram_accuracy": unigram[code]["accuracy"],
            "unigram_perplexity": unigram[code]["perplexity"],
            "accuracy_ratio": own[code]["accuracy"] / max(unigram[code]["accuracy"], 1e-9),
            "context_gain": shuffled[code]["loss"] - own[code]["loss"],
            "own_adapter_loss": float(matrix[i, adapters.index(code)]),
            "other_adapters_loss": float(np.mean(others)),
        }
    return {
        "languages": per_language,
        "matrix": {"texts": texts, "adapters": adapters, "loss": matrix.tolist()},
        "test_rows_per_language": {c: len(r) for c, r in test.items()},
    }


def draw_matrix(results: dict, path: str) -> bool:
    """The text-language x adapter loss heatmap as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'xmod-jax[plots]'): no heatmap")
        return False
    m = results["matrix"]
    loss = np.asarray(m["loss"])
    fig, ax = plt.subplots(figsize=(9, 8))
    image = ax.imshow(loss, cmap="viridis_r")
    ax.set_xticks(range(len(m["adapters"])), m["adapters"], rotation=90, fontsize=7)
    ax.set_yticks(range(len(m["texts"])), m["texts"], fontsize=7)
    ax.set_xlabel("adapter")
    ax.set_ylabel("held-out text (test split)")
    for i, code in enumerate(m["texts"]):
        j = m["adapters"].index(code)
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.2))
    fig.colorbar(image, ax=ax, label="masked-token cross-entropy (nats)")
    ax.set_title("MLM loss of each language's text through each adapter (red: own)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def training_facts(workdir: str) -> dict:
    """Steps, tokens seen, wall time and throughput from the run's log.jsonl."""
    with open(os.path.join(workdir, "log.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    steps = [r for r in records if "loss" in r and "eval" not in r]
    with open(os.path.join(workdir, "run.json"), encoding="utf-8") as f:
        run = json.load(f)
    tokens_per_step = run["batch"] * run["seq_len"]
    seconds = sum(
        tokens_per_step * (b["step"] - a["step"]) / b["tokens_per_s"]
        for a, b in zip([{"step": 0}, *steps], steps, strict=False)
    )
    return {
        "steps": steps[-1]["step"],
        "tokens_seen": steps[-1]["step"] * tokens_per_step,
        "train_seconds": seconds,
        "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in steps[1:]] or [0])),
        "data_fraction": float(np.mean([r["data_fraction"] for r in steps[1:]] or [0])),
        "final_train_loss": steps[-1]["loss"],
        "run": run,
    }


def init_line(run: dict) -> str:
    """The model card's line on how the params started (examples/pretrain.py's flags)."""
    changes = []
    if run.get("unigram_bias"):
        changes.append("the output bias at the unigram distribution (`with_unigram_output_bias`)")
    if run.get("local_attention"):
        changes.append("attention aimed at the neighbouring tokens (`with_local_attention_init`)")
    return "- init: transformers' scheme" + (", with " + " and ".join(changes) if changes else "")


def write_card(folder: str, config, results: dict, facts: dict, corpus: dict, drawn: bool) -> None:
    """README.md of the model folder; it shows the heatmap only where one was `drawn`."""
    langs = results["languages"]
    lines = [
        "# xmod-jax/mini-debian",
        "",
        "A small X-MOD (pre-LN, {} layers, hidden {}, {} heads, adapters of {} units, "
        "{} languages) pre-trained from scratch with xmod-jax's recipe on text from Debian's "
        "archive: package-description translations, fortunes and translated man pages "
        "(`corpus/build.py`). It is a demonstration model, far from xmod-base's quality: it has "
        "seen {:.1f} M tokens.".format(
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            config.hidden_size // config.adapter_reduction_factor,
            len(config.languages),
            facts["tokens_seen"] / 1e6,
        ),  # fmt: skip
        "",
        "## Training",
        "",
        f"- steps: {facts['steps']}, batch {facts['run']['batch']} rows x "
        f"{facts['run']['seq_len']} tokens, tokens seen: {facts['tokens_seen']:,}",
        f"- schedule: AdamW, peak lr {facts['run']['lr']}, warmup {facts['run']['warmup']} "
        f"steps, peak held, linear decay over the last {facts['run']['decay_fraction']:.0%}",
        f"- wall time of the steps: {facts['train_seconds'] / 60:.0f} min on 2 CPU cores "
        f"({facts['tokens_per_s']:,.0f} tokens/s, host data time {facts['data_fraction']:.1%} "
        f"of the step time); final training loss {facts['final_train_loss']:.3f}",
        f"- language sampling p ∝ n^{facts['run']['alpha']}; masking 15% (80/10/10); no "
        "dropout during pre-training (this config sets 0.1 for fine-tuning)",
        init_line(facts["run"]),
        f"- vocabulary: {config.vocab_size} ids, sentencepiece unigram "
        "(`corpus/train_vocab.py`), XLM-R's special-token layout",
        "",
        "## Evaluation (test split, fixed masks, all `<mask>`)",
        "",
        "Reproduce: `python examples/model_card.py --model FOLDER --corpus data/corpus "
        "--workdir RUN`. Accuracy: masked-token top-1; unigram: always the language's most "
        "frequent training token. Context gain: loss with each row's words shuffled minus the "
        "loss (nats; 0 means word order is ignored). Own vs others: the loss through the "
        "language's adapter vs the mean through the other adapters.",
        "",
        "| language | train MB | accuracy | unigram | ratio | perplexity | context gain "
        "| own adapter | other adapters |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for code, r in langs.items():
        mb = corpus[code]["totals"]["train"]["bytes"] / 1e6
        lines.append(
            f"| {code} | {mb:.2f} | {r['accuracy']:.3f} | {r['unigram_accuracy']:.3f} "
            f"| {r['accuracy_ratio']:.1f}x | {r['perplexity']:.0f} | {r['context_gain']:.2f} "
            f"| {r['own_adapter_loss']:.3f} | {r['other_adapters_loss']:.3f} |"
        )
    n = len(langs)
    ratio_ok = sum(r["accuracy_ratio"] >= QUALITY_RATIO for r in langs.values())
    own_ok = sum(r["own_adapter_loss"] < r["other_adapters_loss"] for r in langs.values())
    lines += [
        "",
        f"Accuracy at least {QUALITY_RATIO:.0f}x the unigram baseline: {ratio_ok} of {n} "
        f"languages. Own adapter better than the mean of the others: {own_ok} of {n}.",
        "",
        *(["![text language x adapter loss](adapter_losses.png)", ""] if drawn else []),
        "Held out from training, for independent evaluation: gettext catalogues, "
        "debian-reference and debian-handbook.",
        "",
    ]
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the model folder to evaluate")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--workdir", required=True, help="the pre-training run folder")
    parser.add_argument("--rows-per-language", type=int, default=64)
    parser.add_argument("--unigram-chars", type=int, default=4_000_000)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    model, params = xj.XmodForMaskedLM.from_pretrained(args.model, dtype="float32")
    tokenizer = xj.XmodTokenizer.from_pretrained(args.model)
    results = evaluate(model, params, tokenizer, args)
    results["training"] = training_facts(args.workdir)
    with open(os.path.join(args.corpus, "manifest.json"), encoding="utf-8") as f:
        corpus = json.load(f)["languages"]
    folder = args.model
    drawn = draw_matrix(results, os.path.join(folder, "adapter_losses.png"))
    with open(os.path.join(folder, "eval.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    write_card(folder, model.config, results, results["training"], corpus, drawn)
    for code, r in results["languages"].items():
        print(f"{code}: accuracy {r['accuracy']:.3f} (unigram {r['unigram_accuracy']:.3f}, "
              f"{r['accuracy_ratio']:.1f}x), context gain {r['context_gain']:.2f}, own adapter "
              f"{r['own_adapter_loss']:.3f} vs others {r['other_adapters_loss']:.3f}")  # fmt: skip
    written = ["README.md", "eval.json"] + (["adapter_losses.png"] if drawn else [])
    print(f"wrote {', '.join(written)} into {folder} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
