"""Shared pieces of the benchmarks: the machine, xmod-base-shaped models, timing, BENCHMARKS.md.

Timings interleave the contenders (ours, then theirs, repeated) and report medians, so drift in
the machine's speed hits both alike; ratios measured in one run are what the tables report.
Between timed calls the benchmark pauses briefly, and torch's OpenMP threads are told to sleep
rather than spin when idle (OMP_WAIT_POLICY=PASSIVE, set before torch loads): on a 2-core machine
spinning threads would otherwise slow whichever contender runs next.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import re
import resource
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np

import xmod_jax as xj

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(ROOT, "BENCHMARKS.md")
XMOD_BASE_LANGUAGES = [f"l{i:02d}_XX" for i in range(81)]


def xmod_base_config(vocab_size: int = 8192, **overrides) -> xj.XmodConfig:
    """facebook/xmod-base's shape (12 x 768, 12 heads, FFN 3072, 81 languages, bottleneck 384)
    with a vocabulary cut to `vocab_size` rows (250002 in the real model) to bound memory."""
    return xj.XmodConfig(
        **{
            "vocab_size": vocab_size,
            "max_position_embeddings": 514,
            "type_vocab_size": 1,
            "layer_norm_eps": 1e-5,
            "languages": XMOD_BASE_LANGUAGES,
            **overrides,
        }
    )


def machine() -> str:
    """One line describing this machine and the libraries measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            found = re.search(r"model name\s*:\s*(.+)", f.read())
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    device = jax.devices()[0]
    parts = [f"{cpu}, {os.cpu_count()} cores", f"jax {jax.__version__} on {device.device_kind}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        pass
    return "; ".join(parts)


def block(value):
    """Wait for JAX results; torch results are ready when returned."""
    return jax.block_until_ready(value) if not hasattr(value, "detach") else value


PAUSE = 0.5  # seconds between timed calls, for spinning threads to go idle


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each contender, after one warm-up call each, interleaved."""
    for fn in contenders.values():
        block(fn())
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            time.sleep(PAUSE)
            start = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def random_ids(config: xj.XmodConfig, batch: int, length: int, seed: int = 0) -> np.ndarray:
    """<s> w ... w </s> rows without padding, ids avoiding the special tokens."""
    ids = np.random.default_rng(seed).integers(5, config.vocab_size, (batch, length))
    ids[:, 0], ids[:, -1] = 0, 2
    return ids


def language_mix(batch: int, kind: str, num_languages: int = 81) -> np.ndarray:
    """lang ids for a batch: "one" language, "8 mixed" (8 languages cycled), or "all different"."""
    if kind == "one":
        return np.full(batch, 7)
    if kind == "8 mixed":
        return (np.arange(batch) % 8) * 10
    return (np.arange(batch) * 7) % num_languages


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section `name` of BENCHMARKS.md, between marker comments."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = open(REPORT).read() if os.path.exists(REPORT) else "# Benchmarks\n"
    block_text = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(
            re.escape(start) + r".*?" + re.escape(end), lambda _: block_text, text, flags=re.S
        )
    else:
        text = text.rstrip() + "\n\n" + block_text + "\n"
    with open(REPORT, "w") as f:
        f.write(text)
    print(body)
