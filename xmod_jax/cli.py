"""The `xmod-jax` command: conversion, fill-mask, sentence embeddings, model info, export.

    xmod-jax convert hf-to-flax SRC DST [--dtype bfloat16] [--head CLASS] [--overwrite]
    xmod-jax convert flax-to-hf SRC DST [--head CLASS] [--overwrite]
    xmod-jax fill-mask [--model PATH] [--lang CODE] [--top-k 5] [TEXT ...]
    xmod-jax embed [--model PATH] [--lang CODE] --output OUT.npy [--normalize] [TEXT... | --input F]
    xmod-jax info [--model PATH]
    xmod-jax export --model PATH --output M.xmodexport [--function mlm|embed]
                    [--platforms cpu,cuda,tpu] [--dtype bfloat16]

`export` writes one portable file (`xmod_jax.export`): the model's inference function lowered
with `jax.export` for each platform, any batch size and any length up to the position table, with
lang ids as an input and the parameters inside. `--function mlm` (the default for an
XmodForMaskedLM checkpoint) gives MLM logits; `embed` (the default otherwise) the last hidden
state and the mean-pooled sentence embedding. `xmod_jax/export/runtime.py` runs it with jax and
numpy alone.

Also runs as `python -m xmod_jax.cli`. Texts come from the arguments, else from `--input FILE`
(`-` is stdin), else from stdin, one per line. `--model` is a folder or a hub name; fill-mask,
embed and info default to the model shipped with the package, "xmod-jax/mini-debian"
(`xmod_jax.BUNDLED_MODEL`), whose default language is en_XX. Progress bars go to stderr when it
is a terminal.

Every failure is one line on stderr, `xmod-jax: error: ...`, never a traceback: bad input and
any `OSError` (naming the file and the reason: a missing or unwritable path, a full disk) exit
with status 1, usage errors with status 2. Destinations are checked before any weight is read.
A closed stdout (`xmod-jax fill-mask ... | head -1`) ends quietly with status 141, as a Unix tool
killed by SIGPIPE does; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import re
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import numpy as np

from xmod_jax import pipelines
from xmod_jax.atomic import atomic_path
from xmod_jax.ckpts.folders import flax_to_hf, hf_to_flax
from xmod_jax.ckpts.mapping import iter_leaves
from xmod_jax.config import XmodConfig
from xmod_jax.export import FUNCTIONS, KNOWN_PLATFORMS, PLATFORMS, check_platforms, export_model
from xmod_jax.hub import BUNDLED_MODEL, resolve_folder
from xmod_jax.nn.encoder import XmodModel
from xmod_jax.nn.heads import HEAD_PARAMS, XmodForMaskedLM, class_for
from xmod_jax.nn.module import Params, XmodPreTrainedModule
from xmod_jax.text.tokenizer import XmodTokenizer

PROG = "xmod-jax"
STDOUT = "standard output"  # the OSError.filename of a failed write to stdout
# A closed stdout ends the command quietly with the status a shell reports for a process killed
# by SIGPIPE (128 + 13), as `yes | head -1` does: `set -o pipefail` scripts see the same thing
# for us as for any Unix tool, and the cut is not reported as success.
CLOSED_STDOUT_STATUS = 128 + signal.SIGPIPE
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
    try:
        args = _parse(argv)
        status = args.run(args)
        _say(flush=True)  # a full disk or closed pipe on stdout fails here, not at exit
        return status
    except (ValueError, OSError) as e:  # CheckpointError: ValueError
        if isinstance(e, BrokenPipeError) and e.filename == STDOUT:
            _silence_stdout()
            return CLOSED_STDOUT_STATUS
        print(f"{PROG}: error: {_describe(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line, like every other error (status 2)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{PROG}: error: {message}; see {self.prog} --help\n")

    def print_help(self, file: Any = None) -> None:
        if file is None:  # argparse would swallow a closed stdout; end as every command does
            _say(self.format_help().rstrip("\n"))
        else:
            super().print_help(file)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--no-progress", action="store_true", help="no progress bars")
    model_path = argparse.ArgumentParser(add_help=False)
    model_path.add_argument(
        "--model",
        default=BUNDLED_MODEL,
        help=f"checkpoint folder or hub name (default: {BUNDLED_MODEL}, shipped with the package)",
    )
    model = argparse.ArgumentParser(add_help=False, parents=[quiet, model_path])
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

    info = commands.add_parser(
        "info", help="config, languages, parameter counts", parents=[model_path]
    )
    info.set_defaults(run=run_info)

    export = commands.add_parser("export", help="a portable jax.export file", parents=[quiet])
    export.add_argument("--model", required=True, help="checkpoint folder or hub name")
    export.add_argument("--output", required=True, help="the file to write (.xmodexport)")
    export.add_argument(
        "--function",
        choices=FUNCTIONS,
        help="mlm: MLM logits; embed: hidden states and sentence embeddings "
        "(default: mlm for an XmodForMaskedLM checkpoint, else embed)",
    )
    export.add_argument(
        "--platforms",
        default=",".join(PLATFORMS),
        help=f"comma-separated, among {', '.join(KNOWN_PLATFORMS)} ({','.join(PLATFORMS)})",
    )
    export.add_argument("--dtype", choices=DTYPES, default="float32", help="computation dtype")
    export.set_defaults(run=run_export)
    return parser


# ---------------------------------------------------------------------------------- commands
def run_convert(args: argparse.Namespace) -> int:
    progress, start = _progress(args), time.perf_counter()
    _check_destination(args.dst, folder=True, overwrite=args.overwrite)
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
    _say(
        f"wrote {args.dst}: {summary['model']}, {summary['parameters']:,} parameters, "
        f"{summary['bytes'] / 2**30:.2f} GiB {'/'.join(summary['dtypes'])}, "
        f"{time.perf_counter() - start:.1f} s, peak RSS {peak:.2f} GiB"
    )
    return 0


def run_fill_mask(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ValueError(f"--top-k must be positive, got {args.top_k}")
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
        _say(text)
        for m, prediction in enumerate(masks, start=1):
            for rank, (token, score) in enumerate(
                zip(prediction.tokens, prediction.scores, strict=True), start=1
            ):
                _say(f"  mask {m}  {rank}. {token!r} {score:.4f}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    if args.texts and args.input is not None:
        raise ValueError("pass texts as arguments or with --input, not both")
    model, params, tokenizer, texts = _load(args, "embed", XmodModel, output=args.output)
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
    _write_file(args.output, lambda f: np.save(f, vectors))
    _say(f"wrote {args.output}: {vectors.shape[0]} x {vectors.shape[1]} float32")
    return 0


def run_info(args: argparse.Namespace) -> int:
    folder = resolve_folder(args.model)
    config = XmodConfig.from_pretrained(folder)
    cls = class_for(config.architectures)
    config = dataclasses.replace(config, **cls.config_defaults)
    shapes = cls(config).param_shapes()  # eval_shape: nothing is allocated
    groups = parameter_groups(shapes)
    _say(f"model: {cls.__name__} ({args.model})")
    _say(
        f"config: hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
        f"{config.num_attention_heads} heads, intermediate {config.intermediate_size}, "
        f"vocabulary {config.vocab_size}, max positions {config.max_position_embeddings}, "
        f"adapter bottleneck {config.adapter_size} (reduction {config.adapter_reduction_factor})"
    )
    flags = ("pre_norm", "adapter_layer_norm", "adapter_reuse_layer_norm", "ln_before_adapter")
    _say("flags: " + ", ".join(f"{name}={getattr(config, name)}" for name in flags))
    _say(f"languages ({config.num_languages}): {', '.join(config.languages)}")
    _say(f"default language: {config.default_language}")
    if cls.uses_labels:
        _say(f"labels ({config.num_labels}): {', '.join(config.id2label)}")
    _say("parameters:")
    total = groups.pop("total")
    for name, (count, _) in groups.items():
        line = f"  {name:<18} {count:>14,}"
        if name == "language adapters":
            line += f"  ({count // config.num_languages:,} per language)"
        _say(line)
    count, nbytes = total
    dtypes = "/".join(sorted({str(leaf.dtype) for leaf in jax.tree.leaves(shapes)}))
    _say(f"  {'total':<18} {count:>14,}  {nbytes:,} bytes {dtypes} ({nbytes / 2**30:.2f} GiB)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    platforms = check_platforms(p.strip() for p in args.platforms.split(","))
    folder, config, found = _checkpoint(args.model)
    function = args.function or ("mlm" if found is XmodForMaskedLM else "embed")
    cls = XmodForMaskedLM if function == "mlm" else XmodModel
    _check_class(args.model, f"export --function {function}", cls, found)
    _check_destination(args.output, folder=False)
    fields = {"add_pooling_layer": False} if cls is XmodModel else {}
    model, params = cls.from_pretrained(
        folder, dtype=DTYPES[args.dtype], progress=_progress(args), **fields
    )
    exported = export_model(model, params, function=function, platforms=platforms)
    size = _write_file(args.output, exported.write)
    _say(
        f"wrote {args.output}: {function} of {cls.__name__}, {size / 2**20:.1f} MiB, "
        f"platforms {'/'.join(platforms)}, batch any, length 1..{exported.max_length}, "
        f"{config.num_languages} languages"
    )
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
def _load(
    args: argparse.Namespace,
    command: str,
    cls: type[XmodPreTrainedModule],
    output: str | None = None,
):
    """Checks the config, language, texts and `output` file, then loads -> (model, params,
    tokenizer, texts).

    Cheap checks come first, so bad input fails before any weight is read.
    """
    folder, config, found = _checkpoint(args.model)
    _check_class(args.model, command, cls, found)
    if args.lang is not None:
        config.lang_ids(args.lang)
    else:
        config.default_lang_id(how="--lang CODE")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    texts = _read_texts(args)
    if output is not None:
        _check_destination(output, folder=False)
    tokenizer = XmodTokenizer.from_pretrained(folder)
    fields = {"add_pooling_layer": False} if cls is XmodModel else {}  # embed needs no pooler
    model, params = cls.from_pretrained(
        folder, dtype=DTYPES[args.dtype], progress=_progress(args), **fields
    )
    return model, params, tokenizer, texts


def _checkpoint(name: str) -> tuple[str, XmodConfig, type[XmodPreTrainedModule]]:
    """A checkpoint folder or hub name -> (folder, config, the class its config names)."""
    folder = resolve_folder(name)
    config = XmodConfig.from_pretrained(folder)
    return folder, config, class_for(config.architectures)


def _check_class(
    name: str, command: str, cls: type[XmodPreTrainedModule], found: type[XmodPreTrainedModule]
) -> None:
    """`command` runs `cls` (an `XmodModel` runs the encoder of any checkpoint)."""
    if cls is not XmodModel and found is not cls:
        raise ValueError(
            f"{command} needs an {cls.__name__} checkpoint; {name} holds {found.__name__} "
            "(config.json architectures)"
        )


def _read_texts(args: argparse.Namespace) -> list[str]:
    """The TEXT arguments, else the lines of --input (- is stdin), else the lines of stdin."""
    if args.texts:
        return list(args.texts)
    try:
        if args.input not in (None, "-"):
            where = args.input
            with open(args.input, encoding="utf-8") as f:
                texts = f.read().splitlines()
        else:
            where = "stdin"
            if sys.stdin is None:  # started with stdin closed (`<&-`)
                raise ValueError("stdin is closed; pass TEXT arguments or --input")
            texts = sys.stdin.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not texts:
        raise ValueError(f"no input texts in {where}; pass TEXT arguments, --input or stdin lines")
    return texts


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# ------------------------------------------------------------------------- files and stdout
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit:  # --help exits from here: its text must reach stdout (or fail) now
        _say(flush=True)
        raise


def _say(*lines: str, flush: bool = False) -> None:
    """Prints `lines` to stdout; a failed write raises OSError with filename `STDOUT`."""
    try:
        if lines:
            if sys.stdout is None:  # started with stdout closed (`>&-`)
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            print(*lines, sep="\n")
        if flush and sys.stdout is not None:
            sys.stdout.flush()
    except OSError as e:
        raise _naming(e, STDOUT) from e


def _silence_stdout() -> None:
    """Points a broken stdout at /dev/null: the interpreter flushes what is still buffered at
    exit, and would print "Exception ignored ... BrokenPipeError" when that fails."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file descriptor (None, in-process)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _describe(e: BaseException) -> str:
    """One line for an error: `FILE: reason` for an OSError from the system, else its message."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        return f"{where}: {e.strerror}"
    message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return message or type(e).__name__


def _naming(e: OSError, path: str) -> OSError:
    """`e` (its errno and reason) naming `path`, as the system would have named it."""
    return OSError(e.errno, e.strerror or str(e), os.fspath(path))


def _check_destination(path: str, *, folder: bool, overwrite: bool = True) -> None:
    """Fails now, naming `path`, if a file (`folder=False`) or folder could not be written there,
    so that the command does not read weights or compute first.

    A folder's missing parents are made by the writer (`atomic_folder`); a file's are not. The
    check opens a nameless temporary file where the writer will put its own.
    """
    path = os.fspath(path)
    if folder and os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if not folder:
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if os.path.exists(path) and not os.access(path, os.W_OK):  # not replaced behind its back
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        if os.path.exists(path) and not os.path.isfile(path):  # a device or pipe: written as is
            return
    parent = os.path.dirname(os.path.abspath(path))
    while folder and not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.exists(parent):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    if not os.path.isdir(parent):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    try:
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as e:  # permissions, a read-only file system, ...
        raise _naming(e, path) from e


def _write_file(path: str, write: Callable[[BinaryIO], Any]) -> Any:
    """Calls `write` on `path` opened for binary writing, exactly there (`np.save` would append
    ".npy" to a name without it) -> what `write` returns.

    A regular file is written through a temporary sibling and renamed into place, so a failed
    write (a full disk) leaves no partial file and any old one whole; a device or pipe
    (`/dev/stdout`) is written directly. Failures raise OSError naming `path`.
    """
    try:
        if os.path.exists(path) and not os.path.isfile(path):
            with open(path, "wb") as f:
                return write(f)
        with atomic_path(os.path.realpath(path)) as tmp, open(tmp, "wb") as f:
            return write(f)
    except OSError as e:
        raise _naming(e, path) from e


if __name__ == "__main__":
    sys.exit(main())
