"""Resolving `from_pretrained` paths: the bundled model's name, a local folder, or a Hugging Face
hub name.

`BUNDLED_MODEL` ("xmod-jax/mini-debian") names the small X-MOD shipped inside the package, in
`BUNDLED_FOLDER`: it always means that folder (a local folder of the same relative path is read
as "./xmod-jax/mini-debian") and is never downloaded. Hub downloads use the optional
`huggingface_hub` package (`pip install 'xmod-jax[hub]'`) and fetch only what loading needs: the
config, the weights and the tokenizer files.
"""

from __future__ import annotations

import os
import re

from xmod_jax.errors import CheckpointError

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
TORCH_INDEX_NAME = "pytorch_model.bin.index.json"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_FILES = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "sentencepiece.bpe.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
HUB_TORCH_FILES = ["pytorch_model.bin", "pytorch_model*.bin", "pytorch_model.bin.index.json"]
BUNDLED_MODEL = "xmod-jax/mini-debian"
BUNDLED_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "mini-debian")


def resolve_folder(path: str | os.PathLike) -> str:
    """The local folder for `path`: the package folder for `BUNDLED_MODEL`, `path` itself for a
    folder, else a hub repository such as "facebook/xmod-base", downloaded."""
    path = os.fspath(path)
    if path == BUNDLED_MODEL:
        return bundled_folder()
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or not REPO_ID.match(path):
        raise CheckpointError(f"{path!r} is not a folder with config.json and weights")
    # A name like "checkpoints/mine" may be a mistyped local path as well as a hub name.
    no_folder = f"no local folder {path!r} (relative to {os.getcwd()})"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{no_folder}; to fetch it from the Hugging Face hub install huggingface_hub "
            "(pip install 'xmod-jax[hub]'), or pass a downloaded folder"
        ) from None
    try:
        folder = snapshot_download(repo_id=path, allow_patterns=HUB_FILES)
        if not has_weight_files(folder):  # older repositories ship only pytorch_model.bin
            folder = snapshot_download(repo_id=path, allow_patterns=HUB_FILES + HUB_TORCH_FILES)
    except Exception as e:  # network, authentication, unknown repository, ...
        reason = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{no_folder}, and as a hub name it could not be downloaded from the Hugging Face "
            f"hub ({type(e).__name__}: {reason}); check the path, or the hub name and the "
            "network"
        ) from None
    return folder


def bundled_folder() -> str:
    """`BUNDLED_FOLDER`, checked to hold weights: a missing folder or missing weights raise a
    CheckpointError naming the folder."""
    if not has_weight_files(BUNDLED_FOLDER):
        state = "holds no model weights" if os.path.isdir(BUNDLED_FOLDER) else "does not exist"
        raise CheckpointError(
            f"the bundled model {BUNDLED_MODEL!r} is missing from this installation: "
            f"{BUNDLED_FOLDER} {state}; reinstall xmod-jax from a wheel or an sdist, which carry "
            "it (a source checkout has it once the trained model is committed there)"
        )
    return BUNDLED_FOLDER


def has_weight_files(folder: str) -> bool:
    """Whether `folder` holds transformers weight files (any of the four layouts)."""
    names = (SAFE_WEIGHTS_NAME, SAFE_INDEX_NAME, TORCH_WEIGHTS_NAME, TORCH_INDEX_NAME)
    return any(os.path.isfile(os.path.join(folder, name)) for name in names)
