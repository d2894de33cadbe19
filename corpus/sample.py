"""Cut the small corpus sample that the tests use (committed once, at most ~1 MB).

    python corpus/sample.py --corpus data/corpus --out tests/data/corpus_sample

For each language: its first training, validation and test documents, up to `--train-chars`,
`--valid-chars` and `--test-chars` characters (whole documents, one per line, each cut to 2,000
characters), plus the corpus manifest's build record.
"""

from __future__ import annotations

import argparse
import json
import os

DOC_CHARS = 2000


def first_documents(path: str, budget: int) -> list[str]:
    """Whole lines of `path` (each cut to DOC_CHARS) until `budget` characters are taken."""
    taken, total = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()[:DOC_CHARS]
            if not line:
                continue
            taken.append(line)
            total += len(line)
            if total >= budget:
                break
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--out", default="tests/data/corpus_sample")
    parser.add_argument("--languages", nargs="*", help="default: every language")
    parser.add_argument("--train-chars", type=int, default=16_000)
    parser.add_argument("--valid-chars", type=int, default=3_000)
    parser.add_argument("--test-chars", type=int, default=6_000)
    args = parser.parse_args()
    languages = args.languages or sorted(
        n.split(".")[0] for n in os.listdir(args.corpus) if n.endswith(".train.txt")
    )
    os.makedirs(args.out, exist_ok=True)
    for code in languages:
        budgets = {"train": args.train_chars, "valid": args.valid_chars, "test": args.test_chars}
        for split, budget in budgets.items():
            docs = first_documents(os.path.join(args.corpus, f"{code}.{split}.txt"), budget)
            with open(os.path.join(args.out, f"{code}.{split}.txt"), "w", encoding="utf-8") as f:
                f.writelines(doc + "\n" for doc in docs)
    with open(os.path.join(args.corpus, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    record = {k: manifest[k] for k in ("suite", "built", "split_rule", "held_out_rule")}
    record["sample"] = vars(args) | {"languages": languages}
    with open(os.path.join(args.out, "SAMPLE.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
