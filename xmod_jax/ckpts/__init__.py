"""Checkpoints: transformers folders and orbax params folders <-> (module, params).

mapping.py       transformers state dict <-> params pytree (numpy arrays)
fit.py           whether stored arrays fit a config.json, naming the field behind each size
weights.py       safetensors and legacy torch `.bin` files
orbax_params.py  orbax params folders (`config.json` + `params/`)
loading.py       `from_pretrained` / `save_pretrained`: the loading policy
folders.py       folder conversion (`convert/hf_to_flax.py`, `convert/flax_to_hf.py`)
"""

from xmod_jax.ckpts.folders import flax_to_hf, hf_to_flax

__all__ = ["flax_to_hf", "hf_to_flax"]
