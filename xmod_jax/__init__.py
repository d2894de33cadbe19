"""xmod-jax: X-MOD (XLM-R with per-language bottleneck adapters) in JAX/Flax.

Every module takes `lang_ids` explicitly and gathers its language adapters from stacked
`[L, ...]` parameters; checkpoints load from and save to transformers folders.
"""

from xmod_jax.cache import XmodCache, XmodLayerCache, init_cache
from xmod_jax.config import XmodConfig
from xmod_jax.errors import CheckpointError
from xmod_jax.generation import generate
from xmod_jax.heads import (
    XmodForCausalLM,
    XmodForMaskedLM,
    XmodForMultipleChoice,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
)
from xmod_jax.modeling import XmodModel
from xmod_jax.outputs import XmodLogitsOutput, XmodModelOutput, XmodQuestionAnsweringOutput
from xmod_jax.partitioning import AXIS_NAMES, logical_axes

__all__ = [
    "AXIS_NAMES",
    "CheckpointError",
    "XmodCache",
    "XmodConfig",
    "XmodForCausalLM",
    "XmodForMaskedLM",
    "XmodForMultipleChoice",
    "XmodForQuestionAnswering",
    "XmodForSequenceClassification",
    "XmodForTokenClassification",
    "XmodLayerCache",
    "XmodLogitsOutput",
    "XmodModel",
    "XmodModelOutput",
    "XmodQuestionAnsweringOutput",
    "generate",
    "init_cache",
    "logical_axes",
]

__version__ = "0.1.0"
