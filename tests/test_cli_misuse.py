"""The `xmod-jax` console script misused: every subcommand with missing, wrong and unwritable
arguments, empty input and a closed stdout.

Each misuse gives one `xmod-jax: error: ...` line on stderr naming the culprit, no traceback, no
stdout, a non-zero status (1, or 2 for usage errors) and leaves no file behind; a closed stdout
ends quietly with status 141 (what a shell reports for a Unix tool killed by SIGPIPE).

Every case runs in-process through `cli.main` (milliseconds each) and in a subprocess of the
installed console script, as a user runs it (2-3 s each for the JAX import): one subprocess case
per kind of failure runs by default, the rest are marked slow.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import tempfile
from typing import NamedTuple

import pytest
from helpers import random_params, tiny_config

import xmod_jax as xj
from xmod_jax import cli
from xmod_jax.ckpts.folders import hf_to_flax

SCRIPT = os.path.join(os.path.dirname(sys.executable), "xmod-jax")  # where pip puts it
COMMAND = [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "xmod_jax.cli"]
CLOSED_STDOUT = 141  # 128 + SIGPIPE
DENIED = "(Permission denied|Operation not permitted|Read-only file system)"
KERNEL_READ_ONLY = "/sys"  # sysfs: even root cannot create files there


class Case(NamedTuple):
    argv: tuple[str, ...]  # {root}, {mlm}, {orbax} and {ro} are filled in
    match: str  # a regular expression searched in the error line; paths are filled in escaped
    stdin: str = "a <mask>"
    status: int = 1
    slow: bool = True  # the subprocess run; the in-process run is always fast


CASES = {
    # info
    "info-missing-model": Case(
        ("info", "--model", "{root}/nope"), r"'{root}/nope' is not a folder", slow=False
    ),
    "info-file-as-model": Case(
        ("info", "--model", "{mlm}/config.json"), r"'{mlm}/config\.json' is not a folder"
    ),
    "info-folder-without-config": Case(("info", "--model", "{root}/empty"), r"no config\.json in"),
    "info-model-without-value": Case(
        ("info", "--model"),
        r"argument --model: expected one argument; see xmod-jax info --help$",
        status=2,
    ),
    # fill-mask
    "fill-mask-missing-model": Case(
        ("fill-mask", "--model", "{root}/nope", "--lang", "en_XX"), r"'{root}/nope' is not a"
    ),
    "fill-mask-unknown-language": Case(
        ("fill-mask", "--model", "{mlm}", "--lang", "xx_XX"), r"unknown language 'xx_XX'; known:"
    ),
    "fill-mask-empty-stdin": Case(
        ("fill-mask", "--model", "{mlm}", "--lang", "en_XX"),
        r"no input texts in stdin",
        stdin="",
        slow=False,
    ),
    "fill-mask-unknown-language-for-the-bundled-model": Case(  # no --model: the bundled one
        ("fill-mask", "--lang", "xx_XX", "a <mask>"), r"unknown language 'xx_XX'; known: cs_CZ, "
    ),
    "fill-mask-text-without-mask": Case(
        ("fill-mask", "--model", "{mlm}", "--lang", "en_XX", "no mask here"),
        r"texts\[0\] has no <mask>",
    ),
    "fill-mask-top-k-zero": Case(
        ("fill-mask", "--model", "{mlm}", "--lang", "en_XX", "--top-k", "0"),
        r"--top-k must be positive, got 0",
    ),
    "fill-mask-top-k-not-an-int": Case(
        ("fill-mask", "--model", "{mlm}", "--top-k", "x"),
        r"invalid int value: 'x'; see xmod-jax fill-mask --help$",
        status=2,
        slow=False,
    ),
    # embed
    "embed-output-is-a-directory": Case(
        ("embed", "--model", "{mlm}", "--lang", "en_XX", "--output", "{root}/empty", "a"),
        r"{root}/empty: Is a directory$",
    ),
    "embed-output-disk-full": Case(
        ("embed", "--model", "{mlm}", "--lang", "en_XX", "--output", "/dev/full", "a"),
        r"/dev/full: No space left on device$",
        slow=False,
    ),
    "embed-output-unwritable": Case(
        ("embed", "--model", "{mlm}", "--lang", "en_XX", "--output", "{ro}/x.npy", "a"),
        rf"{{ro}}/x\.npy: {DENIED}$",
        slow=False,
    ),
    "embed-output-parent-missing": Case(
        ("embed", "--model", "{mlm}", "--lang", "en_XX", "--output", "{root}/no/x.npy", "a"),
        r"{root}/no/x\.npy: No such file or directory$",
    ),
    "embed-input-is-a-directory": Case(
        ("embed", "--model", "{mlm}", "--lang", "en_XX", "--output", "{root}/x.npy")
        + ("--input", "{root}/empty"),
        r"{root}/empty: Is a directory$",
    ),
    "embed-input-not-utf8": Case(
        ("embed", "--model", "{mlm}", "--lang", "en_XX", "--output", "{root}/x.npy")
        + ("--input", "{root}/latin1.txt"),
        r"{root}/latin1\.txt: not UTF-8 text",
    ),
    "embed-empty-stdin": Case(
        ("embed", "--model", "{mlm}", "--lang", "en_XX", "--output", "{root}/x.npy"),
        r"no input texts in stdin",
        stdin="",
    ),
    "embed-unknown-language": Case(
        ("embed", "--model", "{mlm}", "--lang", "xx_XX", "--output", "{root}/x.npy", "a"),
        r"unknown language 'xx_XX'",
    ),
    "embed-no-output-argument": Case(
        ("embed", "--model", "{mlm}", "a"), r"required: --output", status=2
    ),
    # convert hf-to-flax
    "hf-to-flax-missing-source": Case(
        ("convert", "hf-to-flax", "{root}/nope", "{root}/out"),
        r"'{root}/nope' is not a folder",
    ),
    "hf-to-flax-file-as-source": Case(
        ("convert", "hf-to-flax", "{mlm}/config.json", "{root}/out"),
        r"'{mlm}/config\.json' is not a folder",
    ),
    "hf-to-flax-existing-destination": Case(
        ("convert", "hf-to-flax", "{mlm}", "{root}/existing"),
        r"{root}/existing exists; pass --overwrite to replace it$",
        slow=False,
    ),
    "hf-to-flax-read-only-parent": Case(
        ("convert", "hf-to-flax", "{mlm}", "{ro}/out"), rf"{{ro}}/out: {DENIED}$", slow=False
    ),
    "hf-to-flax-destination-under-a-file": Case(
        ("convert", "hf-to-flax", "{mlm}", "{root}/latin1.txt/out"),
        r"{root}/latin1\.txt/out: Not a directory$",
    ),
    "hf-to-flax-unknown-head": Case(
        ("convert", "hf-to-flax", "{mlm}", "{root}/out", "--head", "XmodForNothing"),
        r"unknown head 'XmodForNothing'; known: ",
    ),
    "hf-to-flax-unknown-dtype": Case(
        ("convert", "hf-to-flax", "{mlm}", "{root}/out", "--dtype", "float64"),
        r"argument --dtype: invalid choice: 'float64'",
        status=2,
    ),
    # convert flax-to-hf
    "flax-to-hf-missing-source": Case(
        ("convert", "flax-to-hf", "{root}/nope", "{root}/out"),
        r"'{root}/nope' is not an orbax folder",
    ),
    "flax-to-hf-transformers-folder-as-source": Case(
        ("convert", "flax-to-hf", "{mlm}", "{root}/out"),
        r"'{mlm}' is not an orbax folder",
        slow=False,
    ),
    "flax-to-hf-existing-destination": Case(
        ("convert", "flax-to-hf", "{orbax}", "{root}/existing"),
        r"{root}/existing exists; pass --overwrite",
    ),
    "flax-to-hf-read-only-parent": Case(
        ("convert", "flax-to-hf", "{orbax}", "{ro}/out"), rf"{{ro}}/out: {DENIED}$"
    ),
    "flax-to-hf-no-destination-argument": Case(
        ("convert", "flax-to-hf", "{orbax}"), r"required: dst", status=2
    ),
    # export
    "export-missing-model": Case(
        ("export", "--model", "{root}/nope", "--output", "{root}/x.xmodexport"),
        r"'{root}/nope' is not a folder",
    ),
    "export-output-is-a-directory": Case(
        ("export", "--model", "{mlm}", "--output", "{root}/empty"), r"{root}/empty: Is a directory$"
    ),
    "export-output-unwritable": Case(
        ("export", "--model", "{mlm}", "--output", "{ro}/x.xmodexport"),
        rf"{{ro}}/x\.xmodexport: {DENIED}$",
    ),
    "export-output-disk-full": Case(
        ("export", "--model", "{mlm}", "--output", "/dev/full", "--platforms", "cpu"),
        r"/dev/full: No space left on device$",
    ),
    "export-unknown-platform": Case(
        ("export", "--model", "{mlm}", "--output", "{root}/x", "--platforms", "cpu,gpu"),
        r"platforms must be distinct names among cpu, cuda, rocm, tpu; got 'cpu', 'gpu'$",
        slow=False,
    ),
    "export-unknown-function": Case(
        ("export", "--model", "{mlm}", "--output", "{root}/x", "--function", "logits"),
        r"argument --function: invalid choice: 'logits'",
        status=2,
    ),
    "export-no-output-argument": Case(
        ("export", "--model", "{mlm}"), r"required: --output", status=2
    ),
}


def read_only_parent(tmp_path_factory) -> str | None:
    """A folder in which nothing can be created: chmod 0o500, or for root (to whom permission
    bits do not apply) sysfs, which refuses new files to everyone. None when neither works."""
    if os.geteuid() != 0:
        folder = tmp_path_factory.mktemp("read-only")
        folder.chmod(0o500)
        return str(folder)
    try:
        tempfile.TemporaryFile(dir=KERNEL_READ_ONLY).close()
    except OSError:
        return KERNEL_READ_ONLY
    return None


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tokenizer):
    """{root, mlm, orbax, ro}: a scratch folder holding a transformers MLM folder (with the
    tokenizer), its orbax conversion, an empty folder, an existing destination and a Latin-1
    file; `ro` a read-only folder (None when none can be had)."""
    root = tmp_path_factory.mktemp("misuse")
    mlm = root / "mlm"
    tokenizer.save_pretrained(mlm)
    model = xj.XmodForMaskedLM(tiny_config(tokenizer.vocab_size))
    model.save_pretrained(mlm, random_params(model, scale=0.5))
    hf_to_flax(str(mlm), str(root / "orbax"), progress=False)
    (root / "empty").mkdir()
    (root / "existing").mkdir()
    (root / "existing" / "keep.txt").write_text("precious")
    (root / "latin1.txt").write_bytes("caf\xe9 <mask>\n".encode("latin-1"))
    ro = read_only_parent(tmp_path_factory)
    yield {"root": str(root), "mlm": str(mlm), "orbax": str(root / "orbax"), "ro": ro}
    if ro is not None and ro != KERNEL_READ_ONLY:
        os.chmod(ro, 0o700)  # so that pytest can remove it


def fill(case: Case, paths: dict) -> tuple[list[str], str]:
    """The case's argv and error pattern with the module's paths filled in."""
    if "{ro}" in " ".join(case.argv) and paths["ro"] is None:
        pytest.skip("running as root, which permission bits do not stop, and no sysfs at /sys")
    argv = [arg.format(**paths) for arg in case.argv]
    escaped = {k: re.escape(v) if v else v for k, v in paths.items()}
    return argv, case.match.format(**escaped)


def snapshot(root: str) -> dict[str, bytes | None]:
    """Every path under `root` -> its bytes (None for folders): a misuse must change nothing."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def assert_one_line_error(status: int, stdout: str, stderr: str, case: Case, pattern: str):
    assert "Traceback" not in stderr, stderr
    assert status == case.status, (status, stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmod-jax: error: "), stderr
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert stdout == ""


def xmod_jax_cli(*args: str, stdin: str = "", **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    return subprocess.run(
        [*COMMAND, *args], input=stdin, text=True, timeout=300, cwd=tempfile.gettempdir(), **kwargs
    )


# ------------------------------------------------------------------------------------ misuse
@pytest.mark.parametrize("name", CASES)
def test_misuse_in_process(name, paths, capsys, monkeypatch):
    case = CASES[name]
    argv, pattern = fill(case, paths)
    before = snapshot(paths["root"])
    monkeypatch.setattr(sys, "stdin", io.StringIO(case.stdin))
    if case.status == 2:  # usage errors exit from argparse
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        status = exited.value.code
    else:
        status = cli.main(argv)
    out, err = capsys.readouterr()
    assert_one_line_error(status, out, err, case, pattern)
    assert snapshot(paths["root"]) == before


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if c.slow else n for n, c in CASES.items()],
)
def test_misuse_console_script(name, paths):
    case = CASES[name]
    argv, pattern = fill(case, paths)
    before = snapshot(paths["root"])
    result = xmod_jax_cli(*argv, stdin=case.stdin)
    assert_one_line_error(result.returncode, result.stdout, result.stderr, case, pattern)
    assert snapshot(paths["root"]) == before


def test_closed_stdin_and_stdout_in_process(paths, capsys, monkeypatch):
    """Started with `<&-` or `>&-`, Python has `sys.stdin` / `sys.stdout` None: one line, as
    `cat FILE >&-` says "write error: Bad file descriptor"."""
    monkeypatch.setattr(sys, "stdin", None)
    assert cli.main(["fill-mask", "--model", paths["mlm"], "--lang", "en_XX"]) == 1
    assert (
        capsys.readouterr().err
        == "xmod-jax: error: stdin is closed; pass TEXT arguments or --input\n"
    )
    monkeypatch.setattr(sys, "stdout", None)
    assert cli.main(["info", "--model", paths["mlm"]]) == 1
    assert capsys.readouterr().err == "xmod-jax: error: standard output: Bad file descriptor\n"


# ------------------------------------------------------------------------------ closed stdout
def run_with_closed_stdout(*args: str) -> subprocess.CompletedProcess:
    """The console script writing into a pipe whose reader has already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return xmod_jax_cli(*args, stdout=write, stderr=subprocess.PIPE, capture_output=False)
    finally:
        os.close(write)


CLOSED_STDOUT_COMMANDS = {
    "info": (("info", "--model", "{mlm}"), False),
    "fill-mask": (("fill-mask", "--model", "{mlm}", "--lang", "en_XX", "a <mask>"), False),
    "help": (("--help",), True),
    "embed": (("embed", "--model", "{mlm}", "--lang", "en_XX", "--output", "{out}", "a"), True),
    "convert": (("convert", "hf-to-flax", "{mlm}", "{out}"), True),
    "export": (("export", "--model", "{mlm}", "--output", "{out}", "--platforms", "cpu"), True),
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if slow else n
        for n, (_, slow) in CLOSED_STDOUT_COMMANDS.items()
    ],
)
def test_closed_stdout_ends_quietly(name, paths, tmp_path):
    """No "Exception ignored ... BrokenPipeError" at exit, no traceback: status 141 and silence.
    The work itself is done (a file written before the summary line could not be)."""
    out = tmp_path / "out"
    argv = [arg.format(out=out, **paths) for arg in CLOSED_STDOUT_COMMANDS[name][0]]
    result = run_with_closed_stdout(*argv)
    assert (result.returncode, result.stderr) == (CLOSED_STDOUT, "")
    if name in ("embed", "convert", "export"):
        assert out.exists()


@pytest.mark.slow
def test_head_closes_the_pipe(paths):
    """`xmod-jax fill-mask ... | head -1` for real: more output than a pipe holds, so the
    script is still writing when `head` leaves."""
    texts = "\n".join(f"text {i} <mask>" for i in range(200))  # ~9 kB of output per text
    command = shlex.join([*COMMAND, "fill-mask", "--model", paths["mlm"]])
    result = subprocess.run(
        ["bash", "-c", f"{command} --lang en_XX --top-k 300 | head -1; exit ${{PIPESTATUS[0]}}"],
        input=texts,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (result.returncode, result.stderr, result.stdout) == (
        CLOSED_STDOUT,
        "",
        "text 0 <mask>\n",
    )
