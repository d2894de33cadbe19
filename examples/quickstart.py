"""Quickstart: the X-MOD shipped with the package, loaded by name, in eight languages at once.

    python examples/quickstart.py [--model xmod-jax/mini-debian]

Loads "xmod-jax/mini-debian" (`xj.BUNDLED_MODEL`: a small X-MOD with 16 language adapters,
pre-trained on Debian package descriptions, fortunes and man pages) and its tokenizer by name,
with no download and no torch, and prints:

  - fill-mask: the top-3 words for a package-description sentence with one <mask> in each of
    eight languages (en, de, fr, es, it, ja, ru, zh), run as ONE mixed-language batch in one
    call of the compiled forward pass, every row through its own language's adapter;
  - that each row of that batch equals the per-language run (the same texts with every row in
    that row's language): the same top-3 tokens, and the largest score difference;
  - one German sentence through four adapters (de_DE, da_DK, en_XX, ja_XX): the top-3 words
    under each, from one call;
  - the masked-token loss of one German text (every token masked in turn) through each of the
    16 adapters, all in one call: the German adapter's loss and rank, the best and the worst;
  - the XLA compilations after loading: one per jitted function and padded batch shape,
    whatever mix of languages its rows hold.

About 5 s on 2 CPU cores (measured 5.2 s, 6.5 s of CPU time), most of it the jax import,
loading and the two compilations.
"""

from __future__ import annotations

import argparse
import collections
import time

import jax
import numpy as np

import xmod_jax as xj
from xmod_jax import pipelines
from xmod_jax.train.pretraining import make_mlm_eval_step

SENTENCES = {  # one <mask> each, in the style of Debian package descriptions
    "en_XX": "This package contains the development <mask> for the library.",
    "de_DE": "Dieses Paket enthält die <mask> für das Programm.",
    "fr_XX": "Ce paquet contient les fichiers de <mask> de la bibliothèque.",
    "es_XX": "Este paquete contiene la <mask> compartida.",
    "it_IT": "Questo pacchetto contiene il codice <mask> del programma.",
    "ja_XX": "本パッケージには、GIMP 用の<mask>ファイルが含まれています。",
    "ru_RU": "Этот пакет содержит заголовочные <mask> для разработки.",
    "zh_CN": "该软件包包含该库的开发<mask>。",
}
ADAPTERS_SHOWN = ["de_DE", "da_DK", "en_XX", "ja_XX"]
GERMAN_TEXT = "Das Programm läuft auf der Kommandozeile und braucht keine grafische Oberfläche."
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax.monitoring: one per compile


def top3(prediction: pipelines.MaskPrediction) -> str:
    return "  ".join(
        f"{t.strip() or repr(t)} {s:.3f}" for t, s in zip(*prediction[2:], strict=True)
    )


def adapter_losses(
    model: xj.XmodForMaskedLM, params: dict, tokenizer: xj.XmodTokenizer, text: str
) -> dict[str, float]:
    """{adapter: mean masked-token loss of `text` (nats)}, every token masked in turn, through
    every adapter of the model: one call of a jitted eval step on [L * n, T] rows."""
    one = masked_token_batch(tokenizer, text)  # [n, T]
    n, languages = len(one["input_ids"]), model.config.num_languages
    batch = {key: np.tile(value, (languages, 1)) for key, value in one.items()}  # [L * n, ...]
    batch["lang_ids"] = np.repeat(np.arange(languages, dtype=np.int32), n)  # adapter-major
    scores = jax.device_get(make_mlm_eval_step(model)(params, batch))
    loss = scores["loss_sum"].reshape(languages, n).mean(axis=1)  # [L]
    return dict(zip(model.config.languages, loss.tolist(), strict=True))


def masked_token_batch(tokenizer: xj.XmodTokenizer, text: str) -> dict[str, np.ndarray]:
    """One row per token of `text` with that token masked: input_ids int32 [n, T] and the
    eval step's attention_mask [n, T], logits_positions and labels [n, 1]."""
    ids = tokenizer(text).input_ids[0]  # [T]: <s> ... </s>
    positions = np.arange(1, len(ids) - 1)  # [n]: every token but <s> and </s>
    rows = np.repeat(ids[None], len(positions), axis=0)  # [n, T]
    rows[np.arange(len(positions)), positions] = tokenizer.mask_token_id
    return {
        "input_ids": rows,
        "attention_mask": np.ones_like(rows),
        "logits_positions": positions[:, None].astype(np.int32),
        "labels": ids[positions][:, None],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=xj.BUNDLED_MODEL, help="folder or name to load")
    args = parser.parse_args()
    start = time.perf_counter()
    model, params = xj.XmodForMaskedLM.from_pretrained(args.model)
    tokenizer = xj.XmodTokenizer.from_pretrained(args.model)
    config = model.config
    print(
        f"loaded {args.model} in {time.perf_counter() - start:.1f} s: hidden "
        f"{config.hidden_size}, {config.num_hidden_layers} layers, vocabulary "
        f"{config.vocab_size}, {config.num_languages} language adapters"
    )
    compiles = collections.Counter()
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: compiles.update([kw.get("fun_name")] * (event == COMPILE_EVENT))
    )

    def fill(texts: list[str], lang: str | list[str]) -> list[pipelines.MaskPrediction]:
        results = pipelines.fill_mask(model, params, tokenizer, texts, lang, top_k=3, batch_size=8)
        return [prediction for (prediction,) in results]  # one <mask> per text

    codes, texts = list(SENTENCES), list(SENTENCES.values())
    mixed = fill(texts, codes)
    print(f"\nfill-mask, one mixed batch of {len(codes)} languages, each row its own adapter:")
    for code, text, prediction in zip(codes, texts, mixed, strict=True):
        print(f"  {code}  {text}\n           -> {top3(prediction)}")

    same, worst = 0, 0.0
    for i, code in enumerate(codes):  # the same batch with every row in this row's language
        alone = fill(texts, code)[i]
        same += np.array_equal(alone.token_ids, mixed[i].token_ids)
        worst = max(worst, float(np.max(np.abs(alone.scores - mixed[i].scores))))
    print(
        f"mixed batch vs {len(codes)} per-language runs: the same top-3 tokens in {same} of "
        f"{len(codes)} rows, largest score difference {worst:.1e}"
    )

    german = SENTENCES["de_DE"]
    print(f"\none German sentence through {len(ADAPTERS_SHOWN)} adapters: {german}")
    for code, prediction in zip(ADAPTERS_SHOWN, fill([german] * 4, ADAPTERS_SHOWN), strict=True):
        print(f"  {code} adapter -> {top3(prediction)}")

    losses = adapter_losses(model, params, tokenizer, GERMAN_TEXT)
    ranked = sorted(losses, key=losses.get)
    n = len(masked_token_batch(tokenizer, GERMAN_TEXT)["labels"])
    print(
        f"\none German text, each of its {n} tokens masked in turn, through all {len(ranked)} "
        f"adapters in one call; mean masked-token loss (nats):\n  {GERMAN_TEXT}\n"
        f"  de_DE, its own adapter: {losses['de_DE']:.2f}, rank {ranked.index('de_DE') + 1} "
        f"of {len(ranked)}\n"
        f"  best:  {', '.join(f'{c} {losses[c]:.2f}' for c in ranked[:4])}\n"
        f"  worst: {', '.join(f'{c} {losses[c]:.2f}' for c in ranked[-3:])}"
    )

    calls = 1 + len(codes) + 1
    print(
        f"\nXLA compilations after loading: {sum(compiles.values())} (fill-mask forward: "
        f"{compiles['jit(forward)']} for {calls} calls, each its own language mix; masked-token "
        f"loss: {compiles['jit(eval_step)']}); total {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
