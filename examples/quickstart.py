"""Quickstart: build an X-MOD checkpoint, save it in transformers layout, load it, route languages.

    python examples/quickstart.py [--folder /tmp/xmod-quickstart]

Runs offline in about 15 s on a 2-core CPU. Until a pretrained model ships with the package, it
builds a small randomly initialised X-MOD (4 layers, 3 languages), writes `config.json` +
`model.safetensors`, loads them back with `XmodForMaskedLM.from_pretrained`, and prints:
  - the masked-LM top-5 token ids for the same sentence under each language's adapter
    (the rows differ: only the adapter changes between languages);
  - that a mixed-language batch equals per-language runs row by row (max abs difference ~1e-7);
  - that the jitted forward pass compiled once for every language mix.
"""

from __future__ import annotations

import argparse
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import xmod_jax as xj


def build_checkpoint(folder: str) -> None:
    """A random X-MOD with xmod-base's flags, saved as a transformers folder."""
    config = xj.XmodConfig(
        vocab_size=1000,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=130,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        languages=["en_XX", "de_DE", "sw_KE"],
    )
    model = xj.XmodForMaskedLM(config)
    model.save_pretrained(folder, model.init_params(seed := 0))
    print(f"wrote a random X-MOD (seed {seed}) to {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=None, help="where to write the checkpoint")
    args = parser.parse_args()
    folder = args.folder or tempfile.mkdtemp(prefix="xmod-quickstart-")
    build_checkpoint(folder)

    model, params = xj.XmodForMaskedLM.from_pretrained(folder, default_language="en_XX")
    config = model.config
    input_ids = np.array([[0, 17, 42, 999, 7, 2]])  # <s> ... </s>; position 3 plays <mask>
    forward = jax.jit(lambda p, ids, lang: model.apply({"params": p}, ids, lang_ids=lang).logits)

    batch = np.repeat(input_ids, 3, axis=0)  # [3, 6]: the same sentence three times
    print(f"languages: {config.languages}")
    per_language = {}
    for code in config.languages:
        logits = forward(params, batch, config.lang_ids([code] * 3))  # [3, 6, V]
        per_language[code] = logits[0]
        top5 = np.asarray(jnp.argsort(-logits[0, 3])[:5])
        print(f"  {code}: top-5 ids at position 3 = {top5}")
    for code in config.languages[1:]:
        shift = float(jnp.max(jnp.abs(per_language[code] - per_language["en_XX"])))
        print(f"  max |logits({code}) - logits(en_XX)| = {shift:.3e}  (only the adapter differs)")

    mix = ["sw_KE", "en_XX", "de_DE"]
    mixed = forward(params, batch, config.lang_ids(mix))
    diff = max(float(jnp.max(jnp.abs(mixed[i] - per_language[c]))) for i, c in enumerate(mix))
    print(f"mixed-language batch {mix} vs per-language runs: max abs diff {diff:.2e}")
    print(f"compilations of the forward pass for 4 language mixes: {forward._cache_size()}")


if __name__ == "__main__":
    main()
