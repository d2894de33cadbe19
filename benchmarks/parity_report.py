"""Measured parity with transformers over every config variant and head (the README's table).

    python benchmarks/parity_report.py

Builds the tests' tiny random transformers models (`tests/reference.py`: 2 layers, hidden 32,
3 languages, weights perturbed off their init), saves them, and compares every output field
with `convert/check_parity.compare` on a padded batch whose rows use different languages.
About 20 s on a 2-core CPU; needs torch and transformers. Prints one row per case and the worst
difference overall.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "convert"), str(ROOT / "tests")]
from check_parity import compare  # noqa: E402
from reference import ALL_FLAG_COMBOS, BASE_FLAGS, LARGE_FLAGS, hf_model  # noqa: E402

HEADS = (
    "XmodModel",
    "XmodForMaskedLM",
    "XmodForSequenceClassification",
    "XmodForTokenClassification",
    "XmodForQuestionAnswering",
    "XmodForMultipleChoice",
)


def cases():
    """(label, class name, config overrides) for every measured case."""
    for flags in ALL_FLAG_COMBOS:
        label = " ".join(f"{k}={int(v)}" for k, v in flags.items())
        for head in HEADS[:2]:
            yield f"{head} {label}", head, flags
        yield f"XmodForCausalLM {label}", "XmodForCausalLM", {**flags, "is_decoder": True}
    for name, flags in (("xmod-base flags", BASE_FLAGS), ("xmod-large-prenorm flags", LARGE_FLAGS)):
        for head in HEADS:
            yield f"{head} {name}", head, flags


def main() -> None:
    worst = 0.0
    with tempfile.TemporaryDirectory() as root:
        for index, (label, head, flags) in enumerate(cases()):
            folder = f"{root}/{index}"
            hf_model(head, seed=index, **flags).save_pretrained(folder)
            diffs, _, _ = compare(folder, head, batch=4, length=16)
            worst = max(worst, *diffs.values())
            fields = ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
            print(f"{label:75s} {fields}", flush=True)
    print(f"worst max abs difference over all cases and fields: {worst:.2e}")


if __name__ == "__main__":
    main()
