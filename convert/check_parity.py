"""Check a transformers X-MOD folder against xmod_jax: same outputs, every language.

    python convert/check_parity.py FOLDER [--head XmodForMaskedLM] [--batch 4] [--length 32]

Loads FOLDER (config.json + safetensors or pytorch_model.bin, e.g. a local copy of
facebook/xmod-base) with transformers' torch class and with ours, runs a padded batch of random
token ids in which every row uses a different language, and prints the max abs difference of each
output field. Exits 1 if any exceeds --atol (default 1e-4; a tiny fp32 model agrees to ~1e-6).
Pick the --head the folder was saved with: weights a folder lacks (the pooler of the published
MaskedLM checkpoints, a new classifier) are initialised at random by each library and differ.
Needs torch and transformers (`pip install -e ".[test]"`). A 12-layer base model takes about a
minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

import xmod_jax as xj


def random_batch(config: xj.XmodConfig, batch: int, length: int, seed: int):
    """<s> w ... w </s> rows of decreasing length, right-padded; one language per row."""
    rng = np.random.default_rng(seed)
    low = max(config.pad_token_id, config.bos_token_id or 0, config.eos_token_id or 0) + 2
    ids = rng.integers(low, config.vocab_size, size=(batch, length))
    ids[:, 0] = config.bos_token_id
    for row in range(batch):
        end = max(2, length - row * length // (2 * batch))
        ids[row, end - 1] = config.eos_token_id
        ids[row, end:] = config.pad_token_id
    mask = (ids != config.pad_token_id).astype(np.int64)
    lang_ids = np.arange(batch) % config.num_languages
    return ids, mask, lang_ids


def compare(
    folder: str, head: str = "XmodForMaskedLM", batch: int = 4, length: int = 32, seed: int = 0
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Max abs difference per output field -> (diffs, input_ids, lang_ids)."""
    import torch
    import transformers

    model, params = getattr(xj, head).from_pretrained(folder)
    reference = (
        getattr(transformers, head)
        .from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
        .eval()
    )
    ids, mask, lang_ids = random_batch(model.config, batch, length, seed)
    if model.has_choices:
        ids, mask, lang_ids = ids[None], mask[None], lang_ids[:1]
    flags = dict(output_hidden_states=True, output_attentions=True)
    with jax.default_matmul_precision("highest"):
        ours = model.apply({"params": params}, ids, lang_ids=lang_ids, attention_mask=mask, **flags)
    with torch.no_grad():
        theirs = reference(
            input_ids=torch.as_tensor(ids),
            lang_ids=torch.as_tensor(lang_ids),
            attention_mask=torch.as_tensor(mask),
            **flags,
        )
    diffs = {}
    for name, value in theirs.items():
        if not isinstance(value, torch.Tensor | tuple) or len(value) == 0:
            continue
        ours_value = getattr(ours, name)
        pairs = (
            zip(ours_value, value, strict=True)
            if isinstance(value, tuple)
            else [(ours_value, value)]
        )
        diffs[name] = max(float(np.max(np.abs(np.asarray(a) - b.numpy()))) for a, b in pairs)
    return diffs, ids, lang_ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--head", default="XmodForMaskedLM", help="class name in both libraries")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    diffs, ids, lang_ids = compare(args.folder, args.head, args.batch, args.length, args.seed)
    languages = [int(i) for i in lang_ids]
    print(f"{args.head} on {args.folder}: batch {list(ids.shape)}, languages {languages}")
    for name, diff in diffs.items():
        print(f"  {name:20s} max abs diff {diff:.3e}")
    worst = max(diffs.values())
    ok = worst <= args.atol
    print(("OK" if ok else "MISMATCH") + f": worst {worst:.3e} (atol {args.atol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
