"""Portable exported models: `export_model` and `save` (build.py, which needs the models) and
`load` (runtime.py, which needs only jax and numpy and imports nothing of this package).

    artifact = export_model(model, params, function="mlm", platforms=("cpu", "cuda", "tpu"))
    save(artifact, "model.xmodexport")
    load("model.xmodexport")(input_ids, lang_ids=..., attention_mask=...)["logits"]
"""

from xmod_jax.export.build import (
    FUNCTIONS,
    KNOWN_PLATFORMS,
    PLATFORMS,
    check_platforms,
    export_model,
    save,
)
from xmod_jax.export.runtime import ExportedModel, load

__all__ = [
    "FUNCTIONS",
    "KNOWN_PLATFORMS",
    "PLATFORMS",
    "ExportedModel",
    "check_platforms",
    "export_model",
    "load",
    "save",
]
