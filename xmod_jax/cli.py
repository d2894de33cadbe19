"""The `xmod-jax` command: checkpoint conversion, fill-mask, sentence embeddings, model info.

    xmod-jax convert hf-to-flax SRC DST [--dtype bfloat16] [--head CLASS] [--overwrite]
    xmod-jax convert flax-to-hf SRC DST [--head CLASS] [--overwrite]
    xmod-jax fill-mask --model PATH --lang CODE [--top-k 5] [TEXT ...]
    xmod-jax embed --model PATH --lang CODE --output OUT.npy [--normalize] [TEXT... | --input F]
    xmod-jax info --model PATH

Also runs as `python -m xmod_jax.cli`. Texts come from the arguments, else from `--input FILE`
(`-` is stdin), else from stdin, one per line. `--model` is a folder or a hub name. Progress bars
go to stderr when it is a terminal. Bad input exits with status 1 and one line on stderr
(`xmod-jax: error: ...`); usage errors exit with status 2 (argparse).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import resource
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xmod_jax import pipelines
from xmod_jax.ckpts.folders import flax_to_hf, hf_to_flax
from xmod_jax.ckpts.mapping import iter_leaves
from xmod_jax.config import XmodConfig
from xmod_jax.hub import resolve_folder
from xmod_jax.nn.encoder import XmodModel
from xmod_jax.nn.heads import HEAD_PARAMS, XmodForMaskedLM, class_for
from xmod_jax.nn.module import Params, XmodPreTrainedModule
from xmod_jax.text.tokenizer import XmodTokenizer

PROG = "xmod-jax"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Parameter groups of `info`, by leaf path: the first match wins, the rest is "other".
PARAM_GROUPS = (
    ("language adapters", re.compile(r"(^|/)adapter_modules/")),
    ("layer norms", re.compile(r"(^|/)(LayerNorm|layer_norm|adapter_layer_norm)/")),
    ("embeddings", re.compile(r"(^|/)embeddings/")),
    ("attention", re.compile(r"(^|/)(attention|crossattention)/")),
    ("feed-forward", re.compile(r"(^|/)(intermediate|output)/")),
    ("pooler and heads", re.compile(rf"^(roberta/)?pooler/|^({'|'.join(HEAD_PARAMS)})/")),
)
GROUP_ORDER = (  # as printed
    "embeddings",
    "attention",
    "feed-forward",
    "language adapters",
    "layer norms",
    "pooler and heads",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line `argv` (default `sys.argv[1:]`) -> exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # CheckpointError: ValueError
        message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"{PROG}: error: {message or type(e).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--no-progress", action="store_true", help="no progress bars")
    model = argparse.ArgumentParser(add_help=False, parents=[quiet])
    model.add_argument("--model", required=True, help="checkpoint folder or hub name")
    model.add_argument("--lang", help="language code, e.g. en_XX (default: the config's)")
    model.add_argument("--dtype", choices=DTYPES, default="float32", help="computation dtype")
    model.add_argument("--batch-size", type=int, default=32, help="texts per batch (32)")

    convert = commands.add_parser("convert", help="convert checkpoints")
    directions = convert.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    for name, helps in (
        ("hf-to-flax", "transformers folder (or hub name) -> orbax folder"),
        ("flax-to-hf", "orbax folder -> transformers folder"),
    ):
        sub = directions.add_parser(name, help=helps, parents=[quiet])
        sub.add_argument("src")
        sub.add_argument("dst")
        if name == "hf-to-flax":
            sub.add_argument(
                "--dtype", choices=("float32", "bfloat16", "float16"), help="storage dtype"
            )
        sub.add_argument("--head", default=None, help="model class, e.g. XmodForMaskedLM")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing DST")
        sub.set_defaults(run=run_convert)

    fill = commands.add_parser("fill-mask", help="top predictions per <mask>", parents=[model])
    fill.add_argument("--top-k", type=int, default=5, help="predictions per mask (5)")
    fill.add_argument("texts", nargs="*", metavar="TEXT", help="texts (default: stdin lines)")
    fill.set_defaults(run=run_fill_mask, input=None)

    emb = commands.add_parser("embed", help="mean-pooled sentence embeddings", parents=[model])
    emb.add_argument("--output", required=True, help="float32 [N, D] .npy file to write")
    emb.add_argument("--normalize", action="store_true", help="unit L2 norm per row")
    emb.add_argument("--input", help="file with one text per line (- for stdin)")
    emb.add_argument("texts", nargs="*", metavar="TEXT", help="texts (default: --input, stdin)")
    emb.set_defaults(run=run_embed)

    info = commands.add_parser("info", help="config, languages, parameter counts")
    info.add_argument("--model", required=True, help="checkpoint folder or hub name")
    info.set_defaults(run=run_info)
    return parser


# ---------------------------------------------------------------------------------- commands
def run_convert(args: argparse.Namespace) -> int:
    progress, start = _progress(args), time.perf_counter()
    if args.direction == "hf-to-flax":
        summary = hf_to_flax(
            args.src,
            args.dst,
            dtype=args.dtype,
            head=args.head,
            overwrite=args.overwrite,
            progress=progress,
        )
    else:
        summary = flax_to_hf(
            args.src, args.dst, head=args.head, overwrite=args.overwrite, progress=progress
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"wrote {args.dst}: {summary['model']}, {summary['parameters']:,} parameters, "
        f"{summary['bytes'] / 2**30:.2f} GiB {'/'.join(summary['dtypes'])}, "
        f"{time.perf_counter() - start:.1f} s, peak RSS {peak:.2f} GiB"
    )
    return 0


def run_fill_mask(args: argparse.Namespace) -> int:
    model, params, tokenizer, texts = _load(args, "fill-mask", XmodForMaskedLM)
    results = pipelines.fill_mask(
        model,
        params,
        tokenizer,
        texts,
        args.lang,
        top_k=args.top_k,
        batch_size=args.batch_size,
        progress=_progress(args),
    )
    for text, masks in zip(texts, results, strict=True):
        print(text)
        for m, prediction in enumerate(masks, start=1):
            for rank, (token, score) in enumerate(
                zip(prediction.tokens, prediction.scores, strict=True), start=1
            ):
                print(f"  mask {m}  {rank}. {token!r} {score:.4f}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    if args.texts and args.input is not None:
        raise ValueError("pass texts as arguments or with --input, not both")
    model, params, tokenizer, texts = _load(args, "embed", XmodModel)
    vectors = pipelines.embed(
        model,
        params,
        tokenizer,
        texts,
        args.lang,
        normalize=args.normalize,
        batch_size=args.batch_size,
        progress=_progress(args),
    )
    np.save(args.output, vectors)
    print(f"wrote {args.output}: {vectors.shape[0]} x {vectors.shape[1]} float32")
    return 0


def run_info(args: argparse.Namespace) -> int:
    folder = resolve_folder(args.model)
    config = XmodConfig.from_pretrained(folder)
    cls = class_for(config.architectures)
    config = dataclasses.replace(config, **cls.config_defaults)
    shapes = cls(config).param_shapes()  # eval_shape: nothing is allocated
    groups = parameter_groups(shapes)
    print(f"model: {cls.__name__} ({args.model})")
    print(
        f"config: hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
        f"{config.num_attention_heads} heads, intermediate {config.intermediate_size}, "
        f"vocabulary {config.vocab_size}, max positions {config.max_position_embeddings}, "
        f"adapter bottleneck {config.adapter_size} (reduction {config.adapter_reduction_factor})"
    )
    flags = ("pre_norm", "adapter_layer_norm", "adapter_reuse_layer_norm", "ln_before_adapter")
    print("flags: " + ", ".join(f"{name}={getattr(config, name)}" for name in flags))
    print(f"languages ({config.num_languages}): {', '.join(config.languages)}")
    print(f"default language: {config.default_language}")
    if cls.uses_labels:
        print(f"labels ({config.num_labels}): {', '.join(config.id2label)}")
    print("parameters:")
    total = groups.pop("total")
    for name, (count, _) in groups.items():
        line = f"  {name:<18} {count:>14,}"
        if name == "language adapters":
            line += f"  ({count // config.num_languages:,} per language)"
        print(line)
    count, nbytes = total
    dtypes = "/".join(sorted({str(leaf.dtype) for leaf in jax.tree.leaves(shapes)}))
    print(f"  {'total':<18} {count:>14,}  {nbytes:,} bytes {dtypes} ({nbytes / 2**30:.2f} GiB)")
    return 0


def parameter_groups(shapes: Params) -> dict[str, tuple[int, int]]:
    """{group: (parameters, bytes)} of a params (or `param_shapes()`) tree: every group of
    `GROUP_ORDER`, "other" when some leaf fits none, and "total" last."""
    groups = {name: [0, 0] for name in GROUP_ORDER}
    for path, leaf in iter_leaves(shapes):
        key = "/".join(path)
        name = next((n for n, rule in PARAM_GROUPS if rule.search(key)), "other")
        size = int(np.prod(leaf.shape))
        counts = groups.setdefault(name, [0, 0])
        counts[0] += size
        counts[1] += size * leaf.dtype.itemsize
    total = [sum(c[0] for c in groups.values()), sum(c[1] for c in groups.values())]
    return {name: tuple(c) for name, c in (*groups.items(), ("total", total))}


# ----------------------------------------------------------------------------------- helpers
def _load(args: argparse.Namespace, command: str, cls: type[XmodPreTrainedModule]):
    """Checks the config, language and texts, then loads -> (model, params, tokenizer, texts).

    Cheap checks come first, so bad input fails before any weight is read.
    """
    folder = resolve_folder(args.model)
    config = XmodConfig.from_pretrained(folder)
    found = class_for(config.architectures)
    if cls is not XmodModel and found is not cls:
        raise ValueError(
            f"{command} needs an {cls.__name__} checkpoint; {args.model} holds {found.__name__} "
            "(config.json architectures)"
        )
    if args.lang is not None:
        config.lang_ids(args.lang)
    else:
        config.default_lang_id(how="--lang CODE")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    texts = _read_texts(args)
    tokenizer = XmodTokenizer.from_pretrained(folder)
    fields = {"add_pooling_layer": False} if cls is XmodModel else {}  # embed needs no pooler
    model, params = cls.from_pretrained(
        folder, dtype=DTYPES[args.dtype], progress=_progress(args), **fields
    )
    return model, params, tokenizer, texts


def _read_texts(args: argparse.Namespace) -> list[str]:
    """The TEXT arguments, else the lines of --input (- is stdin), else the lines of stdin."""
    if args.texts:
        return list(args.texts)
    if args.input not in (None, "-"):
        with open(args.input, encoding="utf-8") as f:
            texts = f.read().splitlines()
        where = args.input
    else:
        texts = sys.stdin.read().splitlines()
        where = "stdin"
    if not texts:
        raise ValueError(f"no input texts in {where}; pass TEXT arguments, --input or stdin lines")
    return texts


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


if __name__ == "__main__":
    sys.exit(main())
