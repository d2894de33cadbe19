"""Fine-tuning: freezing, optimizers, pure train and eval steps, train-state checkpoints,
and language surgery.

  freezing.py     label trees for `optax.multi_transform` (presets and rules) and row masks
  optim.py        `make_optimizer`: AdamW with fairseq's fine-tuning defaults
  steps.py        `TrainState`, `make_train_step`, `make_eval_step`, `batch_indices`
  checkpoints.py  `TrainCheckpoints` (orbax)
  languages.py    `add_language`, `select_languages`
  transfer.py     zero-shot transfer: fine-tune in one language, score every language
"""

from xmod_jax.train.checkpoints import TrainCheckpoints
from xmod_jax.train.freezing import freeze_labels
from xmod_jax.train.languages import add_language, select_languages
from xmod_jax.train.optim import make_optimizer
from xmod_jax.train.steps import TrainState, batch_indices, make_eval_step, make_train_step

__all__ = [
    "TrainCheckpoints",
    "TrainState",
    "add_language",
    "batch_indices",
    "freeze_labels",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "select_languages",
]
