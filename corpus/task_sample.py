"""Cut the small section task shipped with the package (for the notebooks; committed once).

    python corpus/task_sample.py --task data/tasks/sections --out xmod_jax/data/sections-mini

From a task folder written by corpus/section_task.py: the first `--train-per-class` English
train descriptions of every class, the first `--valid-per-class` valid ones, and for every test
language the first `--test-per-class` of every class (file order, which is package order), each
text cut to `--max-chars` characters at a word boundary. Same layout as the full task
(`train.jsonl`, `valid.jsonl`, `test.<code>.jsonl`, `labels.json`), plus `stats.json` naming
the source, the options and the sizes. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter


def cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, at the last space when there is one."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    return head[: head.rfind(" ")] if " " in head else head


def first_per_class(path: str, per_class: int, max_chars: int) -> list[dict]:
    """The first `per_class` records of every label in `path`, in file order, texts cut."""
    taken, counts = [], Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if counts[record["label"]] < per_class:
                counts[record["label"]] += 1
                taken.append({**record, "text": cut(record["text"], max_chars)})
    return taken


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="data/tasks/sections")
    parser.add_argument("--out", default="xmod_jax/data/sections-mini")
    parser.add_argument("--train-per-class", type=int, default=80)
    parser.add_argument("--valid-per-class", type=int, default=10)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--max-chars", type=int, default=400)
    args = parser.parse_args(argv)

    per_class = {"train": args.train_per_class, "valid": args.valid_per_class}
    names = sorted(n for n in os.listdir(args.task) if n.endswith(".jsonl"))
    os.makedirs(args.out, exist_ok=True)
    sizes = {}
    for name in names:
        split = name.split(".")[0]
        limit = per_class.get(split, args.test_per_class)
        records = first_per_class(os.path.join(args.task, name), limit, args.max_chars)
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        sizes[name[: -len(".jsonl")]] = len(records)
    with open(os.path.join(args.task, "labels.json")) as f:
        labels = json.load(f)
    with open(os.path.join(args.out, "labels.json"), "w") as f:
        json.dump(labels, f)
    with open(os.path.join(args.task, "stats.json")) as f:
        rule = json.load(f)["rule"]
    stats = {"sample_of": args.task, "task_rule": rule, "options": vars(args), "sizes": sizes}
    with open(os.path.join(args.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(f"wrote {args.out}: {sizes}")
    return stats


if __name__ == "__main__":
    main()
