"""Measured parity with transformers over every config variant and head (the README's table).

    python benchmarks/parity_report.py

Builds tiny random transformers models (2 layers, hidden 32, 3 languages, weights perturbed off
their init), saves them, and compares every output field with `convert/check_parity.compare`
on a padded batch whose rows use different languages. About a minute on a 2-core CPU; needs
torch and transformers. Prints one row per case and the worst difference overall.
"""

from __future__ import annotations

import itertools
import pathlib
import sys
import tempfile

import torch
import transformers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "convert"))
from check_parity import compare  # noqa: E402

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    layer_norm_eps=1e-5,
    languages=["en_XX", "de_DE", "fr_XX"],
)
BASE = dict(
    pre_norm=False,
    adapter_layer_norm=False,
    adapter_reuse_layer_norm=True,
    ln_before_adapter=True,
    adapter_reduction_factor=2,
)
LARGE = dict(
    pre_norm=True,
    adapter_layer_norm=True,
    adapter_reuse_layer_norm=False,
    ln_before_adapter=False,
    adapter_reduction_factor=4,
)
FLAGS = ("pre_norm", "adapter_layer_norm", "adapter_reuse_layer_norm", "ln_before_adapter")
HEADS = (
    "XmodModel",
    "XmodForMaskedLM",
    "XmodForSequenceClassification",
    "XmodForTokenClassification",
    "XmodForQuestionAnswering",
    "XmodForMultipleChoice",
)


def cases():
    for values in itertools.product((False, True), repeat=4):
        flags = dict(zip(FLAGS, values, strict=True))
        label = " ".join(f"{k}={int(v)}" for k, v in flags.items())
        for head in ("XmodModel", "XmodForMaskedLM"):
            yield f"{head} {label}", head, flags
    for name, flags in (("xmod-base flags", BASE), ("xmod-large-prenorm flags", LARGE)):
        for head in HEADS:
            yield f"{head} {name}", head, flags


def main() -> None:
    worst = 0.0
    with tempfile.TemporaryDirectory() as root:
        for index, (label, head, flags) in enumerate(cases()):
            torch.manual_seed(index)
            config = transformers.XmodConfig(**TINY, **flags)
            model = getattr(transformers, head)(config)
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(0.1 * torch.randn_like(param))
            folder = f"{root}/{index}"
            model.save_pretrained(folder)
            diffs, _, _ = compare(folder, head, batch=4, length=16)
            worst = max(worst, *diffs.values())
            fields = ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
            print(f"{label:75s} {fields}", flush=True)
    print(f"worst max abs difference over all cases and fields: {worst:.2e}")


if __name__ == "__main__":
    main()
