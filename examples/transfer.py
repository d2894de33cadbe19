"""Zero-shot cross-lingual transfer, measured: fine-tune on English, test every language.

    python corpus/section_task.py --corpus data/corpus --out data/tasks/sections
    python examples/transfer.py --task data/tasks/sections --out runs/transfer

The task is corpus/section_task.py's: a Debian package description -> its archive section
(10 topical classes); English descriptions of train-split packages to learn from, every
language's descriptions of test-split packages (which no pre-training read) to test on.

For each seed, `XmodForSequenceClassification` is loaded from the pre-trained model (default:
the bundled xmod-jax/mini-debian; the seed draws the new classifier head and orders the batches),
fine-tuned on English with the paper's freezing (embeddings and language adapters frozen), the
parameters best on English valid are kept, and every test language is scored in one
mixed-language pass twice: each row through its own language's adapter (X-MOD's zero-shot
recipe) and every row through the English adapter (the paper's ablation). Writes results.json
(every number), transfer.md (the table: mean and spread over seeds, beside the task's majority
and naive-Bayes baselines) and, with matplotlib, transfer.png.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import xmod_jax as xj
from xmod_jax.tasks import ClassificationTask, load_classification_task
from xmod_jax.train.transfer import (
    ClassificationSet,
    finetune_classifier,
    make_predict,
    scores_by_language,
)

SOURCE = "en_XX"


def run_seed(args, task: ClassificationTask, seed: int) -> dict:
    """Fine-tune one seed; {"own": {code: scores}, "source": {code: scores}, ...}."""
    classes = task.classes
    model, params = xj.XmodForSequenceClassification.from_pretrained(
        args.model, num_labels=len(classes), id2label=dict(enumerate(classes)), seed=seed
    )
    start = time.time()
    result = finetune_classifier(
        model,
        params,
        task.train,
        valid=task.valid,
        steps=args.steps,
        batch_size=args.batch,
        learning_rate=args.lr,
        eval_every=args.eval_every,
        seed=seed,
    )
    seconds = time.time() - start
    codes = sorted(task.tests)
    test = ClassificationSet.concatenate([task.tests[c] for c in codes])
    order = np.random.default_rng(seed).permutation(len(test))  # batches mix languages
    test = test.take(order)
    predict = make_predict(model, batch_size=args.batch)
    by_id = {int(model.config.lang_ids(c)): c for c in codes}
    out = {"seed": seed, "best_step": result.best_step, "train_seconds": round(seconds, 1)}
    out["valid_accuracy"] = result.valid_accuracy
    out["losses"] = [round(x, 4) for x in result.losses]
    for name, routed in (
        ("own", test),
        ("source", test.routed_to(int(model.config.lang_ids(SOURCE)))),
    ):
        scores = scores_by_language(test.labels, predict(result.params, routed), test.lang_ids)
        out[name] = {by_id[i]: s for i, s in scores.items()}
    return out


def summary(runs: list[dict], stats: dict) -> dict:
    """{code: {"n", "own", "own_sd", "source", "source_sd", "own_f1", "majority", "bow"}}."""
    baselines = stats.get("baselines", {}).get("scores", {})
    table = {}
    for code in runs[0]["own"]:
        row = {"n": runs[0]["own"][code]["n"]}
        for name in ("own", "source"):
            values = [r[name][code]["accuracy"] for r in runs]
            row[name], row[f"{name}_sd"] = float(np.mean(values)), float(np.std(values))
        row["own_f1"] = float(np.mean([r["own"][code]["macro_f1"] for r in runs]))
        base = baselines.get(f"test.{code}", {})
        row["majority"] = base.get("majority", {}).get("accuracy")
        row["bow"] = base.get("naive_bayes", {}).get("accuracy")
        table[code] = row
    return table


def markdown(table: dict, args, runs: list[dict]) -> str:
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    lines = [
        f"Fine-tuned on {SOURCE} ({args.steps} steps x {args.batch}, lr {args.lr}, rows of "
        f"{args.max_length} tokens, the paper's freezing), {len(runs)} seeds "
        f"({', '.join(str(r['seed']) for r in runs)}); accuracy mean ± sd over seeds.",
        "",
        "| language | n | own adapter | en_XX adapter | own - en | own macro-F1 | majority | "
        "bag of words |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for code, r in table.items():
        lines.append(
            f"| {code} | {r['n']} | {r['own']:.3f} ± {r['own_sd']:.3f} | {r['source']:.3f} ± "
            f"{r['source_sd']:.3f} | {r['own'] - r['source']:+.3f} | {r['own_f1']:.3f} | "
            f"{fmt(r['majority'])} | {fmt(r['bow'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: dict, path: str) -> bool:
    """Bars per language: own adapter, English adapter, bag of words. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    codes = list(table)
    x = np.arange(len(codes))
    fig, ax = plt.subplots(figsize=(1.2 * len(codes) + 2, 3.5))
    for k, (key, label) in enumerate(
        (("own", "X-MOD, own adapter"), ("source", "X-MOD, en_XX adapter"), ("bow", "bag of words"))
    ):
        values = [table[c][key] or 0 for c in codes]
        errors = [table[c].get(f"{key}_sd", 0) for c in codes]
        ax.bar(x + (k - 1) * 0.27, values, 0.27, yerr=errors, label=label)
    ax.set_xticks(x, codes)
    ax.set_ylabel("test accuracy")
    ax.set_title("zero-shot transfer from English (Debian sections)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="data/tasks/sections", help="section_task.py's output")
    parser.add_argument("--model", default=xj.BUNDLED_MODEL)
    parser.add_argument("--out", default="runs/transfer")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per row")
    args = parser.parse_args(argv)

    tokenizer = xj.XmodTokenizer.from_pretrained(args.model)
    config = xj.XmodConfig.from_pretrained(args.model)
    task = load_classification_task(args.task, tokenizer, config, args.max_length)
    if task.skipped:
        print(f"no adapter for {', '.join(task.skipped)}: their test sets are skipped")
    stats_path = os.path.join(args.task, "stats.json")
    stats = json.load(open(stats_path)) if os.path.exists(stats_path) else {}
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(args, task, seed))
        own = {c: round(s["accuracy"], 3) for c, s in runs[-1]["own"].items()}
        print(f"seed {seed}: best step {runs[-1]['best_step']}, own-adapter accuracy {own}")
    table = summary(runs, stats)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "summary": table, "runs": runs}, f, indent=1)
    text = markdown(table, args, runs)
    with open(os.path.join(args.out, "transfer.md"), "w") as f:
        f.write(text)
    drew = plot(table, os.path.join(args.out, "transfer.png"))
    print(text + f"wrote results.json, transfer.md{', transfer.png' if drew else ''} to {args.out}")
    return table


if __name__ == "__main__":
    main()
