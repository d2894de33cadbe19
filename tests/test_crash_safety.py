"""Crash safety of every writer: killed at each step, or at a random instant, a save leaves the
complete old folder or the complete new one; two savers at once leave one complete folder.

The kill harness: a worker subprocess imports xmod_jax once (without starting jax's runtime) and
forks one child per kill point. The child loads what it will write, installs `atomic.STEP_HOOK`
(called between file operations) and SIGKILLs itself at its step; random kills come from the
worker after a random delay. Each run starts from a copy of the same folder and its aftermath is
kept for the checks here: the folder as a loader sees it (`atomic.readable_folder`) must equal,
file for file and byte for byte, the old folder or the complete new one (the uninterrupted run),
load to the old or new params bit for bit, and `atomic.recover` must leave the same version under
its own name with no leftovers. Each writer is run both with `renameat2(RENAME_EXCHANGE)` (where
the system has it) and with the two-rename protocol. The default run tries a representative
subset of steps; `-m slow` tries every step of every writer and more random instants.
"""

import hashlib
import json
import os
import pathlib
import pickle
import resource
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from helpers import random_params, tiny_config

import xmod_jax as xj
from xmod_jax import atomic
from xmod_jax.ckpts import folders
from xmod_jax.ckpts.orbax_params import load_orbax_params
from xmod_jax.text.spm_files import read_spm_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROTOCOLS = ["exchange", "rename"] if atomic._renameat2 is not None else ["rename"]
SAMPLE = "the house is green und die Straße ist schön"

# The worker: argv[1] is a JSON spec. It never touches jax's runtime itself, so forking is safe.
WORKER = r"""
import json, os, pickle, random, shutil, signal, sys, time, traceback

spec = json.load(open(sys.argv[1]))
import xmod_jax as xj
from xmod_jax import atomic
from xmod_jax.ckpts import folders

WRITER = spec["writer"]
TARGET = os.path.join(spec["scratch"], "ckpt")


def prepare(source):
    if WRITER == "model":  # a pickled config and numpy params tree, made by the test
        with open(source, "rb") as f:
            saved = pickle.load(f)
        return xj.XmodForMaskedLM(xj.XmodConfig.from_dict(saved["config"])), saved["params"]
    if WRITER == "tokenizer":
        return xj.XmodTokenizer.from_pretrained(source)
    return source


def write(prepared):
    if WRITER == "model":
        model, params = prepared
        model.save_pretrained(TARGET, params)
    elif WRITER == "tokenizer":
        prepared.save_pretrained(TARGET)
    elif WRITER == "hf_to_flax":
        folders.hf_to_flax(prepared, TARGET, overwrite=True, progress=False)
    else:
        folders.flax_to_hf(prepared, TARGET, overwrite=True, progress=False)


def child(run, source, ready, go):
    atomic.USE_RENAME_EXCHANGE = run["protocol"] == "exchange"
    prepared = prepare(source)
    steps = []
    rng = random.Random(os.getpid())

    def hook(name):
        steps.append(name)
        if run.get("jitter"):
            time.sleep(rng.random() * run["jitter"])
        if len(steps) == run.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)

    atomic.STEP_HOOK = hook
    os.write(ready, b"r")
    if go is not None:
        os.read(go, 1)
    start = time.perf_counter()
    write(prepared)
    seconds = time.perf_counter() - start
    if run.get("trace"):
        with open(run["trace"], "w") as f:
            json.dump({"steps": steps, "seconds": seconds}, f)


def fork(run, source, go):
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child(run, source, ready_w, go)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid


def execute(run):
    shutil.rmtree(spec["scratch"], ignore_errors=True)
    shutil.copytree(spec["pristine"], spec["scratch"], symlinks=True)
    sources = run.get("sources") or [spec["source"]]
    go_r, go_w = os.pipe() if len(sources) > 1 else (None, None)
    pids = [fork(run, source, go_r) for source in sources]
    if go_w is not None:
        os.write(go_w, b"g" * len(pids))
    if run.get("delay") is not None:
        time.sleep(run["delay"])
        os.kill(pids[0], signal.SIGKILL)
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    for fd in (go_r, go_w):
        if fd is not None:
            os.close(fd)
    os.rename(spec["scratch"], os.path.join(spec["results"], run["label"]))
    signals = [os.WTERMSIG(s) if os.WIFSIGNALED(s) else 0 for s in statuses]
    codes = [os.WEXITSTATUS(s) if os.WIFEXITED(s) else None for s in statuses]
    return {**run, "signals": signals, "codes": codes}


records = []
rng = random.Random(spec["seed"])
for protocol in spec["protocols"]:
    trace = os.path.join(spec["results"], protocol + ".trace.json")
    records.append(execute({"label": protocol + "-new", "protocol": protocol, "trace": trace}))
    dry = json.load(open(trace))
    taken = set()  # with "first", only the first step of each prefix
    for i, step in enumerate(dry["steps"], start=1):
        prefixes = {p for p in spec["select"] if step.startswith(p)} - taken
        taken |= prefixes if spec["first"] else set()
        if spec["select"] == "*" or prefixes:
            run = {"label": f"{protocol}-kill{i:03d}", "protocol": protocol, "step": step}
            records.append(execute({**run, "kill_at": i}))
    for j in range(spec["random_kills"]):
        delay = rng.uniform(0, 1.2 * dry["seconds"])
        label = f"{protocol}-random{j}"
        records.append(execute({"label": label, "protocol": protocol, "delay": delay}))
    for j in range(spec["concurrent"]):
        run = {"label": f"{protocol}-both{j}", "protocol": protocol, "sources": spec["sources"]}
        records.append(execute({**run, "jitter": 0.004 if j % 4 else 0}))  # interleave
json.dump(records, open(os.path.join(spec["results"], "runs.json"), "w"))
"""


def run_worker(tmp: pathlib.Path, writer: str, source, pristine, **options) -> list[dict]:
    """Run the kill harness for one writer -> one record per run (its aftermath in tmp/label)."""
    spec = {
        "writer": writer,
        "source": str(source),
        "pristine": str(pristine),
        "scratch": str(tmp / "scratch"),
        "results": str(tmp),
        "protocols": PROTOCOLS,
        "select": "*",
        "first": True,
        "random_kills": 0,
        "concurrent": 0,
        "sources": [],
        "seed": 0,
        **options,
    }
    (tmp / "spec.json").write_text(json.dumps(spec))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(tmp / "spec.json")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (tmp / "worker.stderr").write_text(done.stderr)  # tracebacks of children that failed
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"{writer}: worker and its children used {cpu:.1f} s of CPU")
    return json.loads((tmp / "runs.json").read_text())


# ---------------------------------------------------------------------------------- checking
def manifest(folder, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every entry under `folder`: relative path -> sha256 of a file, a link's target, or "dir"."""
    found = {}
    for root, dirs, files in os.walk(folder):
        rel_root = os.path.relpath(root, folder)
        if rel_root.split(os.sep)[0] in skip:
            continue
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            rel = os.path.normpath(os.path.join(rel_root, name))
            if os.path.islink(path):
                found[rel] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    return found


def same_tree(a, b) -> bool:
    """Same structure and bit-identical leaves."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def check_aftermath(
    results: pathlib.Path,
    records: list[dict],
    versions: dict[str, dict],
    load=None,
    skip: tuple[str, ...] = (),
    load_all: bool = False,
    new: str = "B",
) -> dict[str, int]:
    """Each run left one complete version, which loads, and `recover` keeps; -> runs per version.

    `versions`: name -> manifest (the uninterrupted runs must give version `new`);
    `load(folder, version)` loads `folder` through the loaders' own resolution and checks it
    holds `version` (every run when `load_all`, else those whose folder was missing, the
    uninterrupted and random ones, and every fifth).
    """
    seen: dict[str, int] = {}
    for n, record in enumerate(records):
        where = results / record["label"]
        target = where / "ckpt"
        if "kill_at" in record:
            assert record["signals"] == [9], record  # killed at its step, not finished
        elif "delay" not in record:
            assert record["codes"] == [0] * len(record["codes"]), record
        current = pathlib.Path(atomic.readable_folder(target))
        found = manifest(current, skip)
        which = [name for name, m in versions.items() if m == found]
        assert len(which) == 1, f"{record}: the folder is no known version:\n{sorted(found)}"
        assert which == [new] or not record["label"].endswith("-new"), (record, which)
        if load is not None and (
            load_all or current != target or "kill_at" not in record or n % 5 == 0
        ):
            load(target, which[0])
        atomic.recover(target)
        assert manifest(target, skip) == found, f"{record}: recover changed the version"
        assert sorted(os.listdir(where)) == ["ckpt"], f"{record}: leftovers {os.listdir(where)}"
        seen[which[0]] = seen.get(which[0], 0) + 1
    return seen


def report(record_property, name: str, records: list[dict], seen: dict) -> None:
    kills = sum("kill_at" in r for r in records)
    randoms = sum("delay" in r for r in records)
    both = sum("sources" in r for r in records)
    print(f"{name}: {kills} kill points, {randoms} random kills, {both} concurrent saves: {seen}")
    record_property("kill_points", kills)
    record_property("random_kills", randoms)
    record_property("concurrent_saves", both)


def depths(test):
    """Run `test` on the default subset, and exhaustively under `-m slow`."""
    exhaustive = pytest.param("exhaustive", marks=pytest.mark.slow)
    return pytest.mark.parametrize("depth", ["default", exhaustive])(test)


# ----------------------------------------------------------------------------------- writers
@pytest.fixture(scope="module")
def models(tokenizer, tmp_path_factory):
    """The old folder: model A (3 languages) with its tokenizer, a model card and a user's
    files. Sources (transformers folders) of B = A after `add_language` and of C = another
    model after `select_languages`."""
    root = tmp_path_factory.mktemp("models")
    config = tiny_config(len(tokenizer), architectures=["XmodForMaskedLM"])
    model_a = xj.XmodForMaskedLM(config)
    params = {"A": random_params(model_a, seed=0)}
    config_b, params["B"] = xj.add_language(config, params["A"], "gsw_CH", init_from="de_DE")
    other = random_params(model_a, seed=1)
    config_c, params["C"] = xj.select_languages(config, other, ["fr_XX", "en_XX"])
    old = root / "pristine" / "ckpt"
    model_a.save_pretrained(old, params["A"])
    tokenizer.save_pretrained(old)
    (old / "README.md").write_text("# my model card\n")
    (old / "runs").mkdir()
    (old / "runs" / "notes.txt").write_text("lr 1e-4, three languages\n")
    os.symlink("README.md", old / "card.md")
    sources, pickles = {"A": old}, {}
    for name, cfg in (("B", config_b), ("C", config_c)):
        sources[name] = root / name
        xj.XmodForMaskedLM(cfg).save_pretrained(sources[name], params[name])
        pickles[name] = root / f"{name}.pkl"  # what the worker saves: no loading in each child
        numpy_params = jax.tree.map(np.asarray, params[name])
        pickles[name].write_bytes(pickle.dumps({"config": cfg.to_dict(), "params": numpy_params}))
    configs = {name: xj.XmodConfig.from_pretrained(folder) for name, folder in sources.items()}
    old_files = manifest(old)
    versions = {"A": old_files}
    versions |= {name: {**old_files, **manifest(sources[name])} for name in ("B", "C")}
    return dict(
        pristine=old.parent,
        sources=sources,
        pickles=pickles,
        params=params,
        configs=configs,
        versions=versions,
    )


def load_model(models):
    def load(folder, version):
        model, params = xj.XmodForMaskedLM.from_pretrained(folder)
        assert same_tree(params, models["params"][version]), f"{folder}: params are not {version}"
        assert model.config == models["configs"][version]

    return load


# The default run kills the tokenizer save at every step (the cheapest writer: the folder
# protocol is the same for all) and the others at the first step of each of these kinds: while
# carrying files over, at the swap, and while removing the old folder. `-m slow`: every step.
MODEL_STEPS = (
    "folder kept",
    "folder exchanged",
    "folder moved aside",
    "folder moved in",
    "folder renamed for removal",
    "removed entry",
)
CONVERTER_STEPS = ("folder synced", *MODEL_STEPS[1:4])  # a converter child takes ~1 s


@depths
def test_model_save_after_add_language_killed_at_every_step(
    depth, models, tmp_path, record_property
):
    records = run_worker(
        tmp_path,
        "model",
        models["pickles"]["B"],
        models["pristine"],
        select="*" if depth == "exhaustive" else MODEL_STEPS,
        random_kills=1 if depth == "default" else 12,
    )
    versions = {name: models["versions"][name] for name in ("A", "B")}
    seen = check_aftermath(tmp_path, records, versions, load_model(models))
    assert seen.get("A") and seen.get("B"), seen  # kills before and after the swap were tried
    report(record_property, f"model save ({depth})", records, seen)


@depths
def test_two_savers_at_once_leave_one_complete_model(depth, models, tmp_path, record_property):
    records = run_worker(
        tmp_path,
        "model",
        models["pickles"]["C"],
        models["pristine"],
        select=[],
        concurrent=2 if depth == "default" else 20,
        sources=[str(models["pickles"]["B"]), str(models["pickles"]["C"])],
    )
    seen = check_aftermath(tmp_path, records, models["versions"], load_model(models), new="C")
    assert set(seen) <= {"B", "C"}, seen  # one complete new model, the old one never
    report(record_property, f"two savers ({depth})", records, seen)


# ------------------------------------------------------------------------------------ tokenizer
@pytest.fixture(scope="module")
def tokenizers(tokenizer, tmp_path_factory):
    """The old tokenizer A (beside a model card and a user's folder) and a different one, B
    (other scores and max length)."""
    root = tmp_path_factory.mktemp("tokenizers")
    old = root / "pristine" / "ckpt"
    tokenizer.save_pretrained(old)
    tokenizer.save_pretrained(root / "A")
    (old / "README.md").write_text("# card\n")
    (old / "runs").mkdir()
    for i in range(3):
        (old / "runs" / f"notes{i}.txt").write_text(f"run {i}\n")
    vocab, charsmap, added = read_spm_model((old / "sentencepiece.bpe.model").read_bytes(), "old")
    last = len(vocab) - 1
    vocab = [(p, s - 0.25 * (i % 3) if 4 <= i < last else s) for i, (p, s) in enumerate(vocab)]
    other = xj.XmodTokenizer(
        vocab=vocab, charsmap=charsmap, added_tokens=added, model_max_length=17
    )
    other.save_pretrained(root / "new")
    expected = {"A": (tokenizer.encode(SAMPLE), 512), "B": (other.encode(SAMPLE), 17)}
    assert expected["A"] != expected["B"]
    versions = {"A": manifest(old), "B": {**manifest(old), **manifest(root / "new")}}
    sources = [str(root / "A"), str(root / "new")]
    return dict(
        pristine=old.parent,
        source=root / "new",
        sources=sources,
        expected=expected,
        versions=versions,
    )


@depths
def test_tokenizer_save_killed_at_every_step(depth, tokenizers, tmp_path, record_property):
    records = run_worker(
        tmp_path,
        "tokenizer",
        tokenizers["source"],
        tokenizers["pristine"],
        random_kills=3 if depth == "default" else 20,
        seed=1 if depth == "default" else 2,
        concurrent=8 if depth == "default" else 100,  # A and B saved at once: cheap here
        sources=tokenizers["sources"],
    )

    def load(folder, version):
        loaded = xj.XmodTokenizer.from_pretrained(folder)
        got = (loaded.encode(SAMPLE), loaded.model_max_length)
        assert got == tokenizers["expected"][version], f"{folder}: not tokenizer {version}"

    seen = check_aftermath(tmp_path, records, tokenizers["versions"], load, load_all=True)
    assert seen.get("A") and seen.get("B"), seen
    report(record_property, f"tokenizer save ({depth})", records, seen)


# ----------------------------------------------------------------------------------- converters
@pytest.fixture(scope="module")
def converted(models, tmp_path_factory):
    """hf_to_flax overwrites an orbax folder of A from B's transformers folder; flax_to_hf
    overwrites a transformers folder of A from B's orbax folder."""
    root = tmp_path_factory.mktemp("converted")
    hf_a, orbax_a, orbax_b = root / "hf" / "ckpt", root / "orbax" / "ckpt", root / "B_orbax"
    model = xj.XmodForMaskedLM(models["configs"]["A"])
    model.save_pretrained(hf_a, models["params"]["A"])
    folders.hf_to_flax(str(hf_a), str(orbax_a), progress=False)
    folders.hf_to_flax(str(models["sources"]["B"]), str(orbax_b), progress=False)
    configs = {"A": orbax_a / "config.json", "B": orbax_b / "config.json"}
    orbax_versions = {  # orbax names and stamps its files afresh: params/ is compared loaded
        name: {"config.json": manifest(path.parent)["config.json"], "params": "dir"}
        for name, path in configs.items()
    }
    hf_versions = {"A": manifest(hf_a), "B": manifest(models["sources"]["B"])}
    return dict(
        hf=hf_a.parent,
        orbax=orbax_a.parent,
        orbax_source=orbax_b,
        orbax_versions=orbax_versions,
        hf_versions=hf_versions,
    )


@depths
def test_hf_to_flax_overwrite_killed(depth, models, converted, tmp_path, record_property):
    records = run_worker(
        tmp_path,
        "hf_to_flax",
        models["sources"]["B"],
        converted["orbax"],
        select="*" if depth == "exhaustive" else CONVERTER_STEPS,
        random_kills=1 if depth == "default" else 6,
        protocols=PROTOCOLS if depth == "exhaustive" else PROTOCOLS[-1:],
    )

    def load(folder, version):  # the orbax params, read where a loader reads them
        params = load_orbax_params(atomic.readable_folder(folder))
        assert same_tree(params, models["params"][version]), f"{folder}: params are not {version}"
        assert xj.XmodConfig.from_pretrained(folder) == models["configs"][version]

    versions = converted["orbax_versions"]
    seen = check_aftermath(tmp_path, records, versions, load, skip=("params",), load_all=True)
    assert seen.get("A") and seen.get("B"), seen
    report(record_property, f"hf_to_flax --overwrite ({depth})", records, seen)


@depths
def test_flax_to_hf_overwrite_killed(depth, models, converted, tmp_path, record_property):
    records = run_worker(
        tmp_path,
        "flax_to_hf",
        converted["orbax_source"],
        converted["hf"],
        select="*" if depth == "exhaustive" else CONVERTER_STEPS,
        random_kills=1 if depth == "default" else 6,
        protocols=PROTOCOLS if depth == "exhaustive" else PROTOCOLS[:1],
    )
    versions = converted["hf_versions"]
    seen = check_aftermath(tmp_path, records, versions, load_model(models))
    assert seen.get("A") and seen.get("B"), seen
    report(record_property, f"flax_to_hf --overwrite ({depth})", records, seen)


# ------------------------------------------------------------------------ the protocol, in-process
def leftover(folder: pathlib.Path, kind: str, pid: int) -> pathlib.Path:
    """The name `atomic` gives a temporary sibling of `folder` made by process `pid`."""
    return folder.parent / f".{folder.name}.{kind}-{pid}-{atomic._HOST}-abc123"


def dead_pid() -> int:
    """The pid of a process that has exited."""
    code = "import os; print(os.getpid())"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return int(done.stdout)


def test_loaders_read_the_previous_folder_of_a_save_killed_between_renames(tokenizers, tmp_path):
    folder = tmp_path / "tok"
    xj.XmodTokenizer.from_pretrained(tokenizers["pristine"] / "ckpt").save_pretrained(folder)
    before = manifest(folder)
    aside = leftover(folder, "old", dead_pid())
    folder.rename(aside)  # what a kill between the two renames leaves
    assert atomic.readable_folder(folder) == str(aside)
    assert xj.XmodTokenizer.from_pretrained(folder).model_max_length == 512
    atomic.recover(folder)  # what the next writer does first
    assert manifest(folder) == before and os.listdir(tmp_path) == ["tok"]


def test_loaders_wait_for_a_live_writer_between_its_renames(tmp_path):
    folder, new = tmp_path / "f", tmp_path / "new"
    folder.mkdir()
    new.mkdir()
    folder.rename(leftover(folder, "old", os.getpid()))  # a live writer: this process
    timer = threading.Timer(0.3, os.rename, (new, folder))
    start = time.monotonic()
    timer.start()
    assert atomic.readable_folder(folder) == str(folder)  # the new folder, not the old one
    assert 0.25 < time.monotonic() - start < atomic.READ_WAIT
    timer.join()


def test_writers_clean_up_dead_writers_leftovers_and_keep_live_ones(tmp_path):
    folder = tmp_path / "f"
    with atomic.updated_folder(folder) as tmp:
        pathlib.Path(tmp, "a").write_text("1")
    dead, live = dead_pid(), os.getpid()
    stale = [leftover(folder, kind, dead) for kind in ("tmp", "old", "del")]
    fresh = [leftover(folder, kind, live) for kind in ("tmp", "old")]
    for path in stale + fresh:
        path.mkdir()
        (path / "a").write_text("partial")
    (folder / f".a.tmp-{dead}-{atomic._HOST}-xyz").write_text("half a file")
    with atomic.updated_folder(folder) as tmp:
        pathlib.Path(tmp, "b").write_text("2")
    assert sorted(os.listdir(folder)) == ["a", "b"]  # the file temporary is not carried over
    assert sorted(tmp_path.iterdir()) == sorted([folder, *fresh])


def test_updated_folder_keeps_other_files_and_drops_replaced_ones(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    folder.chmod(0o750)
    for name in ("config.json", "model-00001-of-00002.safetensors", "keep.txt"):
        (folder / name).write_text("old " + name)
    inode = (folder / "keep.txt").stat().st_ino
    replaces = ("config.json", "model-*-of-*.safetensors")
    with atomic.updated_folder(folder, replaces=replaces) as tmp:
        pathlib.Path(tmp, "config.json").write_text("new")
    assert sorted(os.listdir(folder)) == ["config.json", "keep.txt"]
    assert (folder / "config.json").read_text() == "new"
    assert (folder / "keep.txt").stat().st_ino == inode  # linked, not copied
    assert folder.stat().st_mode & 0o777 == 0o750  # the folder keeps its permissions
    assert os.listdir(tmp_path) == ["f"]


def test_model_save_replaces_weights_of_every_layout(models, tmp_path):
    folder = tmp_path / "m"
    (folder / "params").mkdir(parents=True)
    (folder / "pytorch_model.bin").write_bytes(b"stale weights")
    (folder / "model.safetensors.index.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text("{}")
    model = xj.XmodForMaskedLM(models["configs"]["B"])
    model.save_pretrained(folder, models["params"]["B"])
    names = ["config.json", "model.safetensors", "tokenizer_config.json"]
    assert sorted(os.listdir(folder)) == names


def test_failed_write_leaves_the_folder_and_no_leftovers(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic.updated_folder(folder) as tmp:
        pathlib.Path(tmp, "a").write_text("new")
        raise RuntimeError("disk full")
    assert (folder / "a").read_text() == "old" and os.listdir(tmp_path) == ["f"]


def test_converter_destination_created_meanwhile_is_not_overwritten(tmp_path):
    folder = tmp_path / "dst"
    with pytest.raises(FileExistsError, match="overwrite"), atomic.atomic_folder(folder) as tmp:
        pathlib.Path(tmp, "a").write_text("mine")
        folder.mkdir()
        (folder / "theirs").write_text("theirs")
    assert os.listdir(folder) == ["theirs"] and os.listdir(tmp_path) == ["dst"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_swap_steps_are_named(protocol, tmp_path, monkeypatch):
    steps = []
    monkeypatch.setattr(atomic, "STEP_HOOK", steps.append)
    monkeypatch.setattr(atomic, "USE_RENAME_EXCHANGE", protocol == "exchange")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a").write_text("old")
    with atomic.updated_folder(folder) as tmp:
        pathlib.Path(tmp, "b").write_text("new")
    swap = {
        "exchange": ["folder exchanged", "parent synced"],
        "rename": [
            "folder moved aside",
            "folder moved in",
            "parent synced",
            "folder renamed for removal",
        ],
    }[protocol]
    before = ["folder created", "folder written", "folder kept a", "folder synced"]
    assert steps == before + swap + ["removed entry"] * 2  # the old file, then its folder
