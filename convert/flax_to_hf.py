"""Convert an orbax X-MOD folder (from hf_to_flax.py) back into a transformers folder.

    python convert/flax_to_hf.py SRC DST [--head XmodForMaskedLM] [--overwrite]

The same as `xmod-jax convert flax-to-hf`. DST gets `config.json` + `model.safetensors` in the
stored dtype, which transformers' matching class loads. DST must not exist unless --overwrite,
and the folder appears only once complete. Prints a summary with the time and the peak resident
memory of the process.
"""

import sys

from xmod_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "flax-to-hf", *sys.argv[1:]]))
