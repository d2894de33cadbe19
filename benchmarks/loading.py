"""Loading a full-size checkpoint: time and peak RSS, ours vs transformers, and conversion.

    python benchmarks/loading.py [--checkpoint /tmp/xmod-base-random]

Uses a full-size random xmod-base (250002 x 768 vocabulary, 12 layers, 81 languages; 3.41 GB of
safetensors), writing it first if the folder does not exist. Each measurement runs in its own
process so peak RSS is its own: `XmodModel.from_pretrained` (ours, safetensors package into numpy),
`transformers.XmodModel.from_pretrained`, and `convert/hf_to_flax.py`. Writes the table to
BENCHMARKS.md. About 3 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from common import machine, write_section

# Peak RSS from VmHWM: ru_maxrss would include the RSS the child inherited from its parent.
MEASURE = """
import sys, time
start = time.perf_counter()
{body}
peak = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(time.perf_counter() - start, peak / 2**20)
"""
BODIES = {
    "ours: XmodModel.from_pretrained": (
        "import jax, xmod_jax as xj\n"
        "model, params = xj.XmodModel.from_pretrained({path!r})\n"
        "jax.block_until_ready(params)"
    ),
    "transformers: XmodModel.from_pretrained": (
        "import transformers\nmodel = transformers.XmodModel.from_pretrained({path!r})"
    ),
    "ours: convert/hf_to_flax.py": (
        "from xmod_jax.cli import main\n"
        "main(['convert', 'hf-to-flax', {path!r}, {path!r} + '-orbax', '--overwrite'])"
    ),
}


def ensure_checkpoint(path: str) -> None:
    """Write the checkpoint in a child process, so this process stays small."""
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return
    print(f"writing a full-size random xmod-base to {path} ...", flush=True)
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "import xmod_jax as xj; from common import xmod_base_config\n"
        "model = xj.XmodForMaskedLM(xmod_base_config(vocab_size=250002))\n"
        f"model.save_pretrained({path!r}, model.init_params(0))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="/tmp/xmod-base-random")
    args = parser.parse_args()
    ensure_checkpoint(args.checkpoint)
    size = os.path.getsize(os.path.join(args.checkpoint, "model.safetensors")) / 2**30
    rows = []
    for name, body in BODIES.items():
        code = MEASURE.format(body=body.format(path=args.checkpoint))
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        seconds, peak = float(out[-2]), float(out[-1])
        rows.append(f"| {name} | {seconds:.1f} s | {peak:.2f} GiB | {peak / size:.2f}x |")
        print(rows[-1], flush=True)
    body = f"""## Loading a full-size checkpoint

`python benchmarks/loading.py`. {machine()}.
A random xmod-base with the full 250002-row vocabulary: {size:.2f} GiB of safetensors (fp32,
853 M parameters). Each line runs in a fresh process; the ratio is peak RSS / file size.
transformers memory-maps safetensors, so its weights count towards RSS only once touched: its
figure is not the resident size of a model in use. Ours reads every tensor into memory.

| what | time | peak RSS | RSS / file |
|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section("loading", body)


if __name__ == "__main__":
    main()
