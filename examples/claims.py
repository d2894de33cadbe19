"""X-MOD's two pre-training claims, measured in miniature: modular vs shared, languages added later.

    python examples/claims.py modular-vs-shared --workdir runs/claims   # ~55 min on 2 cores
    python examples/claims.py post-hoc --workdir runs/claims            # ~20 min more
    python examples/claims.py report --workdir runs/claims --out results/claims

`modular-vs-shared` pre-trains four models of one reduced size (`--hidden 128 --layers 2`,
`--steps 2000` of 32 rows x 128 tokens; examples/pretrain.py's recipe otherwise): modular and
shared (one adapter, `xx_XX`, for every row: the same trunk, data, sampling, masks, steps and
compute per token) at `--few` languages (en_XX de_DE fr_XX it_IT) and at `--many` (every language
with 1 M training characters: the bundled model's 16). Each model is then scored per language:
masked-LM loss, perplexity and accuracy on the corpus's test split (fixed masks, the same rows
for every model), and zero-shot transfer on the section task (examples/transfer.py's recipe:
fine-tuned on English with the paper's freezing, every language through its own adapter, or the
shared one; `--seeds`).

`post-hoc` pre-trains the `--many` model without the `--added` languages (default da_DK and
it_IT, which have transfer test sets), adds each with `add_language`, its adapter rows copied
from a related language's (da_DK from de_DE, it_IT from es_XX), and trains only those rows
(`PretrainConfig(freeze=("new_language", code))`) on that language's text alone for
`--adapt-steps`. Only the new rows can learn the language: the trunk and the embeddings are
shared by every language, and training them would change the others. It then checks that every
other language's MLM outputs are bit-identical to the model before the addition, and scores the
result as above, beside the `--many` modular model that had the languages from the start
(`modular-vs-shared`'s run, pre-trained here first if missing).

`report` writes claims.md (the tables) and the plots (matplotlib) from the runs' files.
Every stage writes its result file and is skipped when that exists; pre-training and adaptation
resume from their checkpoints, so after a stop the same command goes on where it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pretrain as pretrain_example

import xmod_jax as xj
from xmod_jax.tasks import load_classification_task
from xmod_jax.train.languages import add_language
from xmod_jax.train.masking import MaskingSpec
from xmod_jax.train.mlm_data import MixedLanguageBatches, corpus_rows, language_probabilities
from xmod_jax.train.pretrain_init import pretraining_config
from xmod_jax.train.pretraining import HELD_OUT_SEED, HeldOutMLM, PretrainConfig, pretrain
from xmod_jax.train.transfer import (
    ClassificationSet,
    finetune_classifier,
    make_predict,
    scores_by_language,
)

SHARED = pretrain_example.SHARED
SOURCE = "en_XX"  # transfer: fine-tuned on English


# ------------------------------------------------------------------------------------ helpers
def read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str, data: dict) -> None:
    """Atomic: a stage whose file exists is done."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)


def corpus_languages(args) -> list[str]:
    """The `--many` languages: every language with `--min-chars` training characters."""
    chars = pretrain_example.train_chars(args.corpus)
    return sorted(code for code, n in chars.items() if n >= args.min_chars)


def rows_drawn(args, name: str) -> dict[str, float]:
    """Rows of each language that pre-training run `name` drew, in expectation: its sampling
    probabilities (p_l ∝ n_l^alpha over its languages) x steps x batch, from its run.json."""
    run = read_json(os.path.join(args.workdir, name, "run.json"))
    chars = pretrain_example.train_chars(args.corpus)
    p = language_probabilities([chars[c] for c in run["languages"]], run["alpha"])
    drawn = p * run["steps"] * run["batch"]
    return {code: float(n) for code, n in zip(run["languages"], drawn, strict=True)}


def run_languages(args) -> dict[str, list[str]]:
    """{run name: its languages} for every pre-training run."""
    many = args.many or corpus_languages(args)
    added = [code for code, _ in args.added]
    return {  # the first run tokenizes the corpus, the others copy its rows
        f"modular-{len(many)}": sorted(many),
        f"shared-{len(many)}": sorted(many),
        f"modular-{len(args.few)}": sorted(args.few),
        f"shared-{len(args.few)}": sorted(args.few),
        # e.g. without-da-it: the --many languages but the --added ones
        "without-" + "-".join(c.split("_")[0] for c in added): sorted(set(many) - set(added)),
    } | ({f"shared-{len(many)}-matched": sorted(many)} if args.matched_shared else {})


def matched_ffn(args, languages: int) -> int:
    """The FFN width at which a shared model has the parameters of a modular one with
    `languages` adapters: each layer's other adapters (2 h r + r + h parameters each) become
    FFN units (2 h + 1 parameters each), rounded up."""
    config = pretraining_config(
        2, ["xx_XX"], hidden_size=args.hidden, num_hidden_layers=args.layers, seq_len=8
    )
    h, r = config.hidden_size, config.adapter_size
    extra = (languages - 1) * (2 * h * r + r + h)
    return config.intermediate_size + math.ceil(extra / (2 * h + 1))


def copy_rows(source: str, target: str, codes: list[str]) -> None:
    """Seed `target`'s rows cache with `codes`' rows from `source`'s (the same packing), so a
    run on a subset of languages does not tokenize the corpus again."""
    os.makedirs(target, exist_ok=True)
    path = os.path.join(target, "rows.npz")
    if os.path.exists(path) or not os.path.exists(os.path.join(source, "rows.npz")):
        return
    data = np.load(os.path.join(source, "rows.npz"))
    wanted = {k: data[k] for k in data.files if k.split("/")[1] in codes}
    np.savez(path + ".tmp.npz", **wanted)
    os.replace(path + ".tmp.npz", path)


def pretrain_run(args, name: str, languages: list[str]) -> str:
    """Pre-train (or resume) run `name` with examples/pretrain.py; returns its exported model."""
    workdir = os.path.join(args.workdir, name)
    export = os.path.join(workdir, "model")
    if os.path.exists(os.path.join(export, "config.json")):
        return export
    first = os.path.join(args.workdir, f"modular-{len(args.many or corpus_languages(args))}")
    if workdir != first:
        copy_rows(first, workdir, languages)
    print(f"== pre-training {name}: {' '.join(languages)}")
    pretrain_example.main(
        [
            "--corpus", args.corpus, "--vocab", args.vocab, "--workdir", workdir,
            "--export", export, "--dtype", "float32", "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--hidden", str(args.hidden),
            "--layers", str(args.layers), "--batch", str(args.batch),
            "--seq-len", str(args.seq_len),
            "--eval-every", str(args.eval_every), "--checkpoint-every", str(args.checkpoint_every),
            "--eval-rows", str(args.eval_rows), "--languages", *languages,
        ]
        + (["--shared"] if name.startswith("shared") else [])
        + (["--ffn", str(matched_ffn(args, len(languages)))] if name.endswith("-matched") else [])
    )  # fmt: skip
    return export


def adapter_routes(config, languages: list[str]) -> dict[str, str] | None:
    """A shared model's rows all go through its one adapter; a modular model's through their own."""
    return dict.fromkeys(languages, SHARED) if config.languages == (SHARED,) else None


# --------------------------------------------------------------------------------- evaluation
def test_rows(args, tokenizer, languages: list[str]) -> dict[str, np.ndarray]:
    """`--test-rows` packed rows per language from the corpus's test split, cached in WORKDIR."""
    path = os.path.join(args.workdir, "test_rows.npz")
    cached = dict(np.load(path)) if os.path.exists(path) else {}
    missing = [c for c in languages if c not in cached]
    if missing:
        rows = corpus_rows(args.corpus, "test", tokenizer, args.seq_len, languages=missing)
        cached.update({c: r[: args.test_rows] for c, r in rows.items()})
        np.savez(path + ".tmp.npz", **cached)
        os.replace(path + ".tmp.npz", path)
    return {c: cached[c] for c in languages}


def mask_seeds(args) -> dict[str, int]:
    """Each language's held-out mask seed: the one a `--many` run's evaluation gives it
    (`HeldOutMLM`'s default, `HELD_OUT_SEED` + its index), so that every model, whatever its
    languages, is scored on the very same masked tokens."""
    languages = sorted(args.many or corpus_languages(args))
    return {code: HELD_OUT_SEED + n for n, code in enumerate(languages)}


def mlm_scores(args, model_dir: str, languages: list[str]) -> dict[str, dict[str, float]]:
    """{code: {"loss", "perplexity", "accuracy", "tokens"}} on the test split."""
    tokenizer = xj.XmodTokenizer.from_pretrained(model_dir)
    model, params = xj.XmodForMaskedLM.from_pretrained(model_dir)
    held = HeldOutMLM(
        model,
        test_rows(args, tokenizer, languages),
        MaskingSpec.for_tokenizer(tokenizer),
        pad_id=tokenizer.pad_token_id,
        seed=mask_seeds(args),
        adapters=adapter_routes(model.config, languages),
    )
    return held.evaluate(params)


def transfer_scores(args, model_dir: str, languages: list[str]) -> dict:
    """Zero-shot transfer from English, per seed: {"seeds": [{code: scores}], "best_steps"}."""
    tokenizer = xj.XmodTokenizer.from_pretrained(model_dir)
    config = xj.XmodConfig.from_pretrained(model_dir)
    routes = adapter_routes(config, languages)
    task = load_classification_task(args.task, tokenizer, config, args.max_length, routes)
    codes = sorted(task.tests)
    test = ClassificationSet.concatenate([task.tests[c] for c in codes])
    owner = np.concatenate([np.full(len(task.tests[c]), i) for i, c in enumerate(codes)])
    out: dict = {"seeds": [], "best_steps": [], "train_seconds": []}
    for seed in args.seeds:
        model, params = xj.XmodForSequenceClassification.from_pretrained(
            model_dir, num_labels=len(task.classes), seed=seed
        )
        start = time.time()
        result = finetune_classifier(
            model, params, task.train, valid=task.valid, steps=args.ft_steps,
            batch_size=args.ft_batch, learning_rate=args.ft_lr, eval_every=args.ft_eval_every,
            seed=seed,
        )  # fmt: skip
        order = np.random.default_rng(seed).permutation(len(test))  # batches mix languages
        pred = make_predict(model, batch_size=args.ft_batch)(result.params, test.take(order))
        scores = scores_by_language(test.labels[order], pred, owner[order])
        out["seeds"].append({codes[i]: s for i, s in scores.items()})
        out["best_steps"].append(result.best_step)
        out["train_seconds"].append(round(time.time() - start, 1))
    return out


def evaluate_run(args, name: str, model_dir: str, languages: list[str]) -> dict:
    """MLM and transfer scores of one model, kept in WORKDIR/name/eval.json."""
    path = os.path.join(args.workdir, name, "eval.json")
    done = read_json(path)
    if done is not None:
        return done
    print(f"== evaluating {name}")
    result = {
        "mlm": mlm_scores(args, model_dir, languages),
        "transfer": transfer_scores(args, model_dir, languages),
    }
    write_json(path, result)
    return result


# ---------------------------------------------------------------------------------- experiments
def modular_vs_shared(args) -> None:
    runs = run_languages(args)
    for name, languages in runs.items():
        if name.startswith(("modular", "shared")):
            evaluate_run(args, name, pretrain_run(args, name, languages), languages)


def adapt_language(args, model_dir: str, rows: dict, code: str, init_from: str) -> str:
    """Add `code` to the model in `model_dir` (rows from `init_from`), train only its rows on
    its own text; writes and returns WORKDIR/adapt-<code>/model."""
    workdir = os.path.join(args.workdir, f"adapt-{code}")
    export = os.path.join(workdir, "model")
    if os.path.exists(os.path.join(export, "config.json")):
        return export
    tokenizer = xj.XmodTokenizer.from_pretrained(model_dir)
    spec = MaskingSpec.for_tokenizer(tokenizer)
    shipped, params = xj.XmodForMaskedLM.from_pretrained(model_dir)
    config = dataclasses.replace(  # pre-training's dropout (none), as the model was trained
        shipped.config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    config, params = add_language(config, params, code, init_from=init_from)
    model = xj.XmodForMaskedLM(config)
    held = HeldOutMLM(  # the masks of the --many run's evaluations of this language
        model, {code: rows["valid"][code]}, spec, pad_id=tokenizer.pad_token_id,
        seed=mask_seeds(args),
    )  # fmt: skip
    start = os.path.join(workdir, "start.json")
    if not os.path.exists(start):  # the copied rows, before any step
        os.makedirs(workdir, exist_ok=True)
        write_json(start, {"step": 0, "init_from": init_from, "eval": held.evaluate(params)})
    print(f"== adapting {code} (rows from {init_from}) for {args.adapt_steps} steps")
    batches = MixedLanguageBatches(
        [rows["train"][code]], config.lang_ids([code]), args.batch,
        pad_id=tokenizer.pad_token_id, probabilities=[1.0],
    )  # fmt: skip
    budget = PretrainConfig(
        steps=args.adapt_steps, learning_rate=args.adapt_lr, warmup_steps=args.adapt_warmup,
        eval_every=args.adapt_eval_every, checkpoint_every=args.adapt_eval_every,
        freeze=("new_language", code),
    )  # fmt: skip
    state, _ = pretrain(model, params, batches, spec, budget, workdir, held_out=held)
    out = dataclasses.replace(config, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    xj.XmodForMaskedLM(out).save_pretrained(export, state.params)
    tokenizer.save_pretrained(export)
    return export


def outputs_unchanged(args, before_dir: str, after_dir: str, languages: list[str]) -> dict:
    """Every `languages` row's MLM logits and every parameter outside the new adapter rows:
    bit-identical between the model before and after the additions? Raises if not."""
    tokenizer = xj.XmodTokenizer.from_pretrained(before_dir)
    before, p0 = xj.XmodForMaskedLM.from_pretrained(before_dir)
    after, p1 = xj.XmodForMaskedLM.from_pretrained(after_dir)
    rows = test_rows(args, tokenizer, languages)
    ids = np.concatenate([r[:4] for r in rows.values()])
    mask = (ids != tokenizer.pad_token_id).astype(np.int32)
    codes = [c for c, r in rows.items() for _ in r[:4]]
    logits = [
        np.asarray(
            model.apply(
                {"params": params}, input_ids=ids, attention_mask=mask,
                lang_ids=model.config.lang_ids(codes),
            ).logits
        )
        for model, params in ((before, p0), (after, p1))
    ]  # fmt: skip
    differing = []
    n_old = len(before.config.languages)
    flat0 = dict(leaves_by_path(p0))
    for path, leaf in leaves_by_path(p1):
        old = flat0[path]
        if leaf.shape != old.shape:  # a stacked adapter leaf [L, ...]: the old rows come first
            leaf = leaf[:n_old]
        if not np.array_equal(np.asarray(leaf), np.asarray(old)):
            differing.append(path)
    same = bool(np.array_equal(logits[0], logits[1]))
    if not same or differing:
        raise AssertionError(f"other languages changed: logits equal {same}, leaves {differing}")
    return {"rows": int(len(ids)), "languages": languages, "logits_bit_identical": same,
            "params_bit_identical": not differing}  # fmt: skip


def leaves_by_path(params) -> list[tuple[str, np.ndarray]]:
    """(path, leaf) pairs of a params tree."""
    return [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_leaves_with_path(params)]


def post_hoc(args) -> None:
    runs = run_languages(args)
    many = max((n for n in runs if n.startswith("modular")), key=lambda n: len(runs[n]))
    without = next(n for n in runs if n.startswith("without"))
    reference = pretrain_run(args, many, runs[many])  # had them from the start (section 2's)
    base = pretrain_run(args, without, runs[without])
    # every language's rows, the added ones included, from the --many run's cache
    rows = pretrain_example.cached_rows(os.path.join(args.workdir, many, "rows.npz"))
    model_dir = base
    for code, init_from in args.added:
        model_dir = adapt_language(args, model_dir, rows, code, init_from)
    final = os.path.join(args.workdir, "post-hoc")
    check = os.path.join(final, "unchanged.json")
    if read_json(check) is None:
        os.makedirs(final, exist_ok=True)
        write_json(check, outputs_unchanged(args, base, model_dir, runs[without]))
    evaluate_run(args, "post-hoc", model_dir, runs[many])
    evaluate_run(args, many, reference, runs[many])
    split = os.path.join(final, "token_split.json")
    if read_json(split) is None:
        seen = np.zeros(len(xj.XmodTokenizer.from_pretrained(base)), bool)
        for code in runs[without]:  # every token the model without them was trained on
            seen[np.unique(rows["train"][code])] = True
        added = [code for code, _ in args.added]
        write_json(split, {
            "post-hoc": token_split(args, model_dir, added, seen),
            many: token_split(args, reference, added, seen),
        })  # fmt: skip


def token_split(args, model_dir: str, languages: list[str], seen: np.ndarray) -> dict:
    """Test-split MLM loss of `languages`, over the masked tokens that the model pre-trained
    without them saw in its training text (`seen`: bool [V]) and over the others, whose
    embedding rows (also the tied output rows) no step of that run trained:
    {code: {"seen": {"loss", "tokens"}, "unseen": {...}}}."""
    tokenizer = xj.XmodTokenizer.from_pretrained(model_dir)
    model, params = xj.XmodForMaskedLM.from_pretrained(model_dir)
    held = HeldOutMLM(
        model, test_rows(args, tokenizer, languages), MaskingSpec.for_tokenizer(tokenizer),
        pad_id=tokenizer.pad_token_id, seed=mask_seeds(args),
    )  # fmt: skip
    out = {}
    for code, data in held.sets.items():
        inputs = {k: v for k, v in data.items() if k != "labels"}
        inputs["lang_ids"] = model.config.lang_ids([code] * len(data["labels"]))
        logits = model.apply({"params": params}, **inputs).logits
        labels = data["labels"]
        keep = labels >= 0
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(keep, labels, 0))
        losses, labels = np.asarray(losses)[keep], labels[keep]
        out[code] = {
            kind: {
                "loss": float(losses[chosen].mean()) if chosen.any() else None,
                "tokens": int(chosen.sum()),
            }
            for kind, chosen in (("seen", seen[labels]), ("unseen", ~seen[labels]))
        }
    return out


# ------------------------------------------------------------------------------------- report
def summary(result: dict) -> dict[str, dict[str, float]]:
    """{code: {"loss", "perplexity", "accuracy", "transfer", "transfer_sd"}} of one eval.json."""
    out = {}
    for code, m in result["mlm"].items():
        row = {k: m[k] for k in ("loss", "perplexity", "accuracy")}
        seeds = [s[code]["accuracy"] for s in result["transfer"]["seeds"] if code in s]
        if seeds:
            row["transfer"], row["transfer_sd"] = float(np.mean(seeds)), float(np.std(seeds))
        out[code] = row
    return out


def cell(row: dict | None, key: str) -> str:
    """A table cell: the value, "mean ± sd" for transfer, "-" when missing."""
    if row is None or row.get(key) is None:
        return "-"
    if key == "transfer":
        return f"{row['transfer']:.3f} ± {row['transfer_sd']:.3f}"
    return f"{row[key]:.3f}"


def report(args) -> str:
    runs = run_languages(args)
    many = max(len(v) for v in runs.values())
    compared = [n for n in runs if n.startswith(("modular", "shared"))]
    compared.sort(key=lambda n: (len(runs[n]), n.startswith("shared"), n))  # 4, then 16
    names = [*compared, "post-hoc"]
    evals = {n: read_json(os.path.join(args.workdir, n, "eval.json")) for n in names}
    table = {n: summary(e) for n, e in evals.items() if e is not None}
    # rows per language that the run which had the added languages from the start drew
    seen = rows_drawn(args, f"modular-{many}") if "post-hoc" in table else {}
    lines = [
        f"# Claims in miniature ({args.workdir})",
        "",
        "## Modular vs shared: test-split MLM perplexity, zero-shot transfer accuracy",
        "",
        "| language | " + " | ".join(f"ppl {n}" for n in compared) + " | "
        + " | ".join(f"transfer {n}" for n in compared) + " |",
        "|---|" + "---:|" * (2 * len(compared)),
    ]  # fmt: skip
    codes = sorted({c for n in compared for c in table.get(n, {})})
    for code in codes:
        rows = [table.get(n, {}).get(code) for n in compared]
        cells = [cell(r, "perplexity") for r in rows] + [cell(r, "transfer") for r in rows]
        lines.append(f"| {code} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in compared:
        if n in table and all(c in table[n] for c in args.few):
            loss = np.mean([table[n][c]["loss"] for c in args.few])
            lines.append(f"- {n}: mean test loss over {', '.join(args.few)} {loss:.4f}")
    added = [c for c, _ in args.added]
    if "post-hoc" in table:
        start = f"modular-{many}"
        lines += [
            "",
            "## Languages added after pre-training",
            "",
            f"| language | ppl {start} | ppl post-hoc | transfer {start} | transfer post-hoc |",
            "|---|---:|---:|---:|---:|",
        ]
        for code in sorted(table["post-hoc"]):
            first, late = table.get(start, {}).get(code), table["post-hoc"][code]
            name = f"{code} (added)" if code in added else code
            cells = [cell(first, "perplexity"), cell(late, "perplexity")]
            cells += [cell(first, "transfer"), cell(late, "transfer")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        for code in added:
            lines.append(
                f"- {code}: {start} drew about {seen[code]:,.0f} of its rows in pre-training; "
                f"its adaptation drew {args.adapt_steps * args.batch:,}"
            )
        split = read_json(os.path.join(args.workdir, "post-hoc", "token_split.json"))
        if split:
            lines += [
                "",
                "Test loss of the added languages over masked tokens the model pre-trained "
                "without them saw in its training text, and over those it never saw (their "
                "embedding and output rows never trained):",
                "",
                f"| language | unseen share | seen: {start} | seen: post-hoc | unseen: {start} "
                "| unseen: post-hoc |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for code in added:
                first, late = split[start][code], split["post-hoc"][code]
                counts = late["unseen"]["tokens"], late["seen"]["tokens"]
                share = counts[0] / sum(counts)
                pairs = [(r, kind) for kind in ("seen", "unseen") for r in (first, late)]
                losses = [cell(r[kind], "loss") for r, kind in pairs]
                lines.append(f"| {code} | {share:.3f} | " + " | ".join(losses) + " |")
        unchanged = read_json(os.path.join(args.workdir, "post-hoc", "unchanged.json"))
        if unchanged:
            lines += ["", f"Other languages after the additions: {json.dumps(unchanged)}"]
    text = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "claims.md"), "w", encoding="utf-8") as f:
        f.write(text)
    drawn = plot_all(args, table, compared, added, seen)
    print(text + f"wrote claims.md{''.join(', ' + d for d in drawn)} to {args.out}")
    return text


def task_baselines(args, name: str) -> dict[str, float]:
    """{code: accuracy} of a baseline ("majority", "naive_bayes") in the task's stats.json."""
    stats = read_json(os.path.join(args.task, "stats.json")) or {}
    scores = stats.get("baselines", {}).get("scores", {})
    return {
        key.split(".", 1)[1]: value[name]["accuracy"]
        for key, value in scores.items()
        if key.startswith("test.") and name in value
    }


def eval_curve(workdir: str, codes: list[str]) -> tuple[list[int], list[float]]:
    """(steps, mean held-out loss over `codes`) from a run's log.jsonl evaluations."""
    steps, losses = [], []
    path = os.path.join(workdir, "log.jsonl")
    if not os.path.exists(path):
        return steps, losses
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if "eval" in record and all(c in record["eval"] for c in codes):
                steps.append(record["step"])
                losses.append(float(np.mean([record["eval"][c]["loss"] for c in codes])))
    return steps, losses


def plot_all(
    args, table: dict, names: list[str], added: list[str], seen: dict[str, float]
) -> list[str]:
    """modular_vs_shared.png, learning_curves.png, post_hoc.png; [] without matplotlib.
    `seen`: rows per language the `--many` modular run drew (marked on the adaptation curves)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    drawn = []
    present = [n for n in names if n in table]
    if present:
        fig, axes = plt.subplots(
            1, 2, figsize=(14, 3.8), gridspec_kw={"width_ratios": [16, 6]}
        )  # fmt: skip
        codes = sorted({c for n in present for c in table[n]})
        tested = [c for c in codes if any("transfer" in table[n].get(c, {}) for n in present)]
        width = 0.8 / len(present)
        for k, n in enumerate(present):
            offset = (k - (len(present) - 1) / 2) * width
            ppl = [table[n].get(c, {}).get("perplexity", math.nan) for c in codes]
            axes[0].bar(np.arange(len(codes)) + offset, ppl, width, label=n)
            acc = [table[n].get(c, {}).get("transfer", math.nan) for c in tested]
            sd = [table[n].get(c, {}).get("transfer_sd", 0) for c in tested]
            axes[1].bar(np.arange(len(tested)) + offset, acc, width, yerr=sd, label=n)
        majority = task_baselines(args, "majority")
        axes[1].plot(range(len(tested)), [majority.get(c, math.nan) for c in tested], "k_",
                     markersize=18, label="majority class")  # fmt: skip
        axes[0].set_xticks(np.arange(len(codes)), codes, rotation=60)
        axes[0].set_yscale("log")
        axes[0].set_ylabel("test MLM perplexity (lower is better)")
        axes[1].set_xticks(np.arange(len(tested)), tested, rotation=60)
        axes[1].set_ylabel("zero-shot transfer accuracy (from en_XX)")
        for ax in axes:
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "modular_vs_shared.png"), dpi=110)
        plt.close(fig)
        drawn.append("modular_vs_shared.png")
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for n in present:
            steps, losses = eval_curve(os.path.join(args.workdir, n), sorted(args.few))
            ax.plot(steps, losses, marker=".", label=n)
        ax.set_xlabel("pre-training step")
        ax.set_ylabel(f"valid MLM loss, mean of {len(args.few)} languages")
        ax.set_title(f"{', '.join(sorted(args.few))} (the languages of every run)", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "learning_curves.png"), dpi=110)
        plt.close(fig)
        drawn.append("learning_curves.png")
    curves = [os.path.join(args.workdir, f"adapt-{c}", "log.jsonl") for c in added]
    if seen and all(os.path.exists(p) for p in curves):
        many = next(n for n in reversed(names) if n.startswith("modular"))  # the most languages
        fig, axes = plt.subplots(1, len(added), figsize=(5 * len(added), 3.6), squeeze=False)
        for ax, code in zip(axes[0], added, strict=True):
            workdir = os.path.join(args.workdir, f"adapt-{code}")
            start = read_json(os.path.join(workdir, "start.json"))
            steps, losses = eval_curve(workdir, [code])
            label = f"added (rows from {start['init_from']}), only its adapter trains"
            ax.plot([0, *steps], [start["eval"][code]["loss"], *losses], marker=".", label=label)
            _, ref = eval_curve(os.path.join(args.workdir, many), [code])
            if ref:
                ax.axhline(ref[-1], color="gray", ls="--", label=f"{many}, from the start")
            label = f"as many {code} rows as {many} drew"
            ax.axvline(seen[code] / args.batch, color="gray", ls=":", label=label)
            ax.set_title(code)
            ax.set_xlabel("adaptation step")
            ax.set_ylabel("held-out MLM loss (valid)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "post_hoc.png"), dpi=110)
        plt.close(fig)
        drawn.append("post_hoc.png")
    return drawn


# --------------------------------------------------------------------------------------- main
def added_language(text: str) -> tuple[str, str]:
    code, sep, source = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected CODE:INIT_FROM, e.g. da_DK:de_DE, got {text!r}")
    return code, source


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=["modular-vs-shared", "post-hoc", "report"])
    parser.add_argument("--workdir", default="runs/claims")
    parser.add_argument("--out", default="results/claims", help="report: claims.md and plots")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--vocab", default="data/vocab")
    parser.add_argument("--task", default="data/tasks/sections", help="section_task.py's output")
    parser.add_argument("--few", nargs="+", default=["en_XX", "de_DE", "fr_XX", "it_IT"])
    parser.add_argument("--many", nargs="*", help="default: languages with --min-chars of text")
    parser.add_argument("--min-chars", type=int, default=1_000_000)
    parser.add_argument(
        "--matched-shared", action="store_true",
        help="also a shared model at --many languages with the modular one's parameter count "
        "(its FFN widened; more compute per token): is modular's edge only parameters?",
    )  # fmt: skip
    parser.add_argument(
        "--added", nargs="+", type=added_language, default=[("da_DK", "de_DE"), ("it_IT", "es_XX")],
        help="post-hoc: CODE:INIT_FROM, the languages pre-trained without and added later",
    )  # fmt: skip
    size = parser.add_argument_group("pre-training (examples/pretrain.py)")
    size.add_argument("--steps", type=int, default=2000)
    size.add_argument("--warmup", type=int, default=150)
    size.add_argument("--hidden", type=int, default=128)
    size.add_argument("--layers", type=int, default=2)
    size.add_argument("--batch", type=int, default=32)
    size.add_argument("--seq-len", type=int, default=128)
    size.add_argument("--eval-every", type=int, default=250)
    size.add_argument("--checkpoint-every", type=int, default=250)
    size.add_argument("--eval-rows", type=int, default=48, help="valid rows per language")
    size.add_argument("--test-rows", type=int, default=64, help="test rows per language")
    adapt = parser.add_argument_group("post-hoc adaptation (only the new adapter rows train)")
    adapt.add_argument("--adapt-steps", type=int, default=400)
    adapt.add_argument("--adapt-lr", type=float, default=1e-3)
    adapt.add_argument("--adapt-warmup", type=int, default=40)
    adapt.add_argument("--adapt-eval-every", type=int, default=50)
    ft = parser.add_argument_group("zero-shot transfer (examples/transfer.py's recipe)")
    ft.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ft.add_argument("--ft-steps", type=int, default=400)
    ft.add_argument("--ft-batch", type=int, default=32)
    ft.add_argument("--ft-lr", type=float, default=1e-3)
    ft.add_argument("--ft-eval-every", type=int, default=100)
    ft.add_argument("--max-length", type=int, default=64)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    {"modular-vs-shared": modular_vs_shared, "post-hoc": post_hoc, "report": report}[
        args.experiment
    ](args)


if __name__ == "__main__":
    main()
