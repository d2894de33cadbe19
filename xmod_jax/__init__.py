"""xmod-jax: X-MOD (XLM-R with per-language bottleneck adapters) in JAX/Flax.

Every module takes `lang_ids` explicitly and gathers its language adapters from stacked
`[L, ...]` parameters; checkpoints load from and save to transformers folders.
"""

from xmod_jax.config import XmodConfig
from xmod_jax.decoding import generate
from xmod_jax.errors import CheckpointError
from xmod_jax.hub import BUNDLED_MODEL
from xmod_jax.nn.axes import AXIS_NAMES, logical_axes, params_axes
from xmod_jax.nn.cache import XmodCache, XmodLayerCache, init_cache
from xmod_jax.nn.encoder import XmodModel
from xmod_jax.nn.heads import (
    XmodForCausalLM,
    XmodForMaskedLM,
    XmodForMultipleChoice,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
)
from xmod_jax.nn.layouts import stack_layers, unstack_layers
from xmod_jax.nn.outputs import XmodLogitsOutput, XmodModelOutput, XmodQuestionAnsweringOutput
from xmod_jax.text.tokenizer import Encoding, XmodTokenizer
from xmod_jax.train.checkpoints import TrainCheckpoints
from xmod_jax.train.freezing import freeze_labels
from xmod_jax.train.languages import add_language, select_languages
from xmod_jax.train.optim import make_optimizer
from xmod_jax.train.steps import TrainState, make_eval_step, make_train_step

__all__ = [
    "AXIS_NAMES",
    "BUNDLED_MODEL",
    "CheckpointError",
    "Encoding",
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
    "TrainCheckpoints",
    "TrainState",
    "XmodQuestionAnsweringOutput",
    "XmodTokenizer",
    "add_language",
    "freeze_labels",
    "generate",
    "init_cache",
    "logical_axes",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "params_axes",
    "select_languages",
    "stack_layers",
    "unstack_layers",
]

__version__ = "0.1.0"
