"""Convert a transformers X-MOD folder (or hub name) into an orbax checkpoint folder.

    python convert/hf_to_flax.py SRC DST [--dtype bfloat16] [--head XmodForMaskedLM] [--overwrite]

The same as `xmod-jax convert hf-to-flax`. DST gets `config.json` + `params/` (orbax), which
`XmodForX.from_pretrained(DST)` loads. The head defaults to config.json's architecture. DST must
not exist unless --overwrite, and the folder appears only once complete. Prints a summary with
the time and the peak resident memory of the process.
"""

import sys

from xmod_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "hf-to-flax", *sys.argv[1:]]))
