"""Language routing strategies on xmod-base's shape: which is fastest on this backend.

    python benchmarks/routing.py [--repeats 5]

Times the jitted `XmodModel` forward (8 x 128, vocabulary cut to 8192, 81 languages) with each
`routing` ("gather", "single", "auto", "ragged") on a one-language batch and on an 8-language
batch ("single" only applies to one language), and the adapters alone. Gather stays the default
unless another strategy is more than 10% faster here. Writes the table to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

import jax
from common import interleaved, language_mix, machine, random_ids, write_section, xmod_base_config

import xmod_jax as xj
from xmod_jax.nn.options import ROUTINGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = xmod_base_config()
    base = xj.XmodModel(config)
    params = base.init_params(0)
    ids = random_ids(config, 8, 128)
    rows = []
    for mix in ("one", "8 mixed"):
        lang = language_mix(8, mix)
        contenders = {}
        for routing in ROUTINGS:
            if routing == "single" and mix != "one":
                continue
            model = base.clone(routing=routing)
            forward = jax.jit(lambda p, i, ls, m=model: m.apply({"params": p}, i, lang_ids=ls))
            contenders[routing] = lambda f=forward, lang=lang: f(params, ids, lang)
        repeats = {name: args.repeats for name in contenders}
        seconds = interleaved(
            {k: v for k, v in contenders.items() if k != "ragged"}, repeats["gather"]
        )
        seconds.update(interleaved({"ragged": contenders["ragged"]}, 1))  # dense on CPU: slow
        for routing, s in seconds.items():
            rows.append(f"| {mix} | {routing} | {s * 1e3:,.0f} ms | {seconds['gather'] / s:.2f}x |")
            print(rows[-1], flush=True)
    body = f"""## Language routing

`python benchmarks/routing.py`. {machine()}.
`XmodModel` forward, xmod-base shape (vocabulary cut to 8192), 8 x 128; median of
{args.repeats} interleaved repeats (ragged: one run). Speed relative to gather (higher is faster).

| batch | routing | time | vs gather |
|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section("routing", body)


if __name__ == "__main__":
    main()
