"""Convert an orbax X-MOD folder (from hf_to_flax.py) back into a transformers folder.

    python convert/flax_to_hf.py SRC DST [--head XmodForMaskedLM] [--overwrite]

DST gets `config.json` + `model.safetensors` in the stored dtype, loadable by transformers'
matching class. DST must not exist unless --overwrite; the folder appears only once complete.
Prints a summary with the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from xmod_jax.convert import flax_to_hf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="orbax folder (config.json + params/)")
    parser.add_argument("dst", help="transformers folder to create")
    parser.add_argument("--head", default=None, help="model class, e.g. XmodForMaskedLM")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        summary = flax_to_hf(args.src, args.dst, head=args.head, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as e:  # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"wrote {args.dst}: {summary['model']}, {summary['parameters']:,} parameters, "
        f"{summary['bytes'] / 2**30:.2f} GiB {'/'.join(summary['dtypes'])}, "
        f"{time.perf_counter() - start:.1f} s, peak RSS {peak:.2f} GiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
