"""Convert a transformers X-MOD folder (or hub name) into an orbax checkpoint folder.

    python convert/hf_to_flax.py SRC DST [--dtype bfloat16] [--head XmodForMaskedLM] [--overwrite]

DST gets `config.json` + `params/` (orbax); `XmodForX.from_pretrained(DST)` loads it. The head
defaults to config.json's architecture. DST must not exist unless --overwrite; the folder
appears only once complete. Prints a summary with the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from xmod_jax.convert import hf_to_flax


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="transformers folder or Hugging Face hub name")
    parser.add_argument("dst", help="orbax folder to create")
    parser.add_argument("--dtype", default=None, help="storage dtype, e.g. bfloat16")
    parser.add_argument("--head", default=None, help="model class, e.g. XmodForMaskedLM")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        summary = hf_to_flax(
            args.src, args.dst, dtype=args.dtype, head=args.head, overwrite=args.overwrite
        )
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
