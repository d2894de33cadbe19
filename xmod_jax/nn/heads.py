"""Task heads over `XmodModel` (held as `roberta`, transformers' name): masked LM, sequence
classification, multiple choice, token classification and extractive QA.

Each public class only says which head it puts on the encoder output, and describes itself
through class attributes that the rest of the package reads instead of class names:
`hf_architecture` (the transformers class), `head_params` (its top-level parameter names),
`uses_labels` (whether `config.id2label` names its outputs) and `compute_loss` (its training loss,
with transformers' semantics). Validation and the call signature come from
`XmodPreTrainedModule`. Logits are float32 under any compute dtype. Axis legend in `xmod_jax.nn`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmod_jax.activations import ACTIVATIONS
from xmod_jax.config import XmodConfig
from xmod_jax.nn import losses
from xmod_jax.nn.encoder import XmodModel
from xmod_jax.nn.inputs import ModelInputs
from xmod_jax.nn.layers import (
    Dtype,
    XmodModule,
    constant_init,
    dense,
    layer_norm,
    take_positions,
)
from xmod_jax.nn.module import Batch, XmodPreTrainedModule
from xmod_jax.nn.outputs import XmodLogitsOutput, XmodModelOutput, XmodQuestionAnsweringOutput


def logits_dense(config: XmodConfig, features: int, param_dtype: Dtype, name: str):
    """The last projection of a head, computed in float32 ("logits stay float32")."""
    return dense(
        config, features, ("embed", "labels"), dtype=jnp.float32, param_dtype=param_dtype, name=name
    )


def classifier_dropout_rate(config: XmodConfig) -> float:
    """transformers: `classifier_dropout`, falling back to `hidden_dropout_prob`."""
    if config.classifier_dropout is None:
        return config.hidden_dropout_prob
    return config.classifier_dropout


class XmodLMHead(XmodModule):
    """dense -> exact GELU -> layer_norm -> vocabulary logits (decoder tied to the word table).

    With `tie_word_embeddings=False` the head owns `decoder` (kernel [D, V], bias [V]) and, as in
    transformers, the top-level `bias` is then unused; it is kept so checkpoints round-trip.
    """

    @nn.compact
    def __call__(self, x: jax.Array, word_table: jax.Array) -> jax.Array:
        """x [B, T, D], word_table [V, D] -> float32 logits [B, T, V]."""
        cfg, kw = self.config, self.dtypes
        x = dense(cfg, cfg.hidden_size, ("embed", "mlp"), name="dense", **kw)(x)
        x = ACTIVATIONS["gelu"](x)  # transformers hard-codes exact GELU here
        x = layer_norm(cfg, name="layer_norm", **kw)(x)
        bias = self.param(
            "bias", constant_init(0.0, ("vocab",)), (cfg.vocab_size,), self.param_dtype
        )
        if cfg.tie_word_embeddings:
            logits = jnp.einsum(
                "BTD,VD->BTV", x, word_table.astype(self.dtype), preferred_element_type=jnp.float32
            )
            return logits + bias.astype(jnp.float32)
        decoder = dense(
            cfg,
            cfg.vocab_size,
            ("embed", "vocab"),
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            name="decoder",
        )
        return decoder(x)


class XmodClassificationHead(XmodModule):
    """Sentence classification on the <s> token: dropout, dense, tanh, dropout, out_proj."""

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        """x [B, T, D] -> float32 logits [B, num_labels]."""
        cfg = self.config
        drop = nn.Dropout(classifier_dropout_rate(cfg), deterministic=deterministic)
        h = drop(x[:, 0])  # [B, D]
        h = dense(
            cfg,
            cfg.hidden_size,
            ("embed", "mlp"),
            name="dense",
            **self.dtypes,
        )(h)
        h = drop(jnp.tanh(h))
        return logits_dense(cfg, cfg.num_labels, self.param_dtype, "out_proj")(h)


class XmodHeadModel(XmodPreTrainedModule):
    """Encoder (`roberta`) plus one head; subclasses define `head`."""

    uses_pooler: ClassVar[bool] = False

    def setup(self) -> None:
        self.roberta = XmodModel(
            self.config, add_pooling_layer=self.uses_pooler, **self.runtime_fields
        )
        self.setup_head()

    def setup_head(self) -> None:
        raise NotImplementedError

    def forward(
        self,
        inputs: ModelInputs,
        *,
        deterministic: bool,
        output_hidden_states: bool,
        output_attentions: bool,
    ):
        encoded = self.roberta.forward(
            inputs,
            deterministic=deterministic,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        return self.head(encoded, inputs, deterministic)

    def head(self, encoded: XmodModelOutput, inputs: ModelInputs, deterministic: bool):
        raise NotImplementedError

    def compute_loss(self, outputs: Any, batch: Batch) -> jax.Array:
        """The training loss (float32 []) of this head for `outputs` of a call on `batch`."""
        raise NotImplementedError


def _logits_output(logits: jax.Array, encoded: XmodModelOutput) -> XmodLogitsOutput:
    return XmodLogitsOutput(
        logits,
        encoded.hidden_states,
        encoded.attentions,
        encoded.cross_attentions,
        encoded.past_key_values,
    )


class XmodLanguageModel(XmodHeadModel):
    """The LM head on the encoder output: float32 logits [B, T, V]."""

    head_params: ClassVar[tuple[str, ...]] = ("lm_head",)
    takes_logits_positions: ClassVar[bool] = True

    def setup_head(self) -> None:
        self.lm_head = XmodLMHead(self.config, **self.inherited)

    def head(self, encoded, inputs, deterministic):
        hidden = encoded.last_hidden_state  # [B, T, D]
        if inputs.logits_positions is not None:  # the vocabulary projection at K positions only
            hidden = take_positions(hidden, inputs.logits_positions)  # [B, K, D]
        table = self.roberta.word_embedding_table()
        return _logits_output(self.lm_head(hidden, table), encoded)


class XmodForMaskedLM(XmodLanguageModel):
    """Masked-LM logits float32 [B, T, V] (the published X-MOD checkpoints are masked LMs)."""

    hf_architecture: ClassVar[str] = "XmodForMaskedLM"

    def compute_loss(self, outputs: XmodLogitsOutput, batch: Batch) -> jax.Array:
        return losses.masked_lm_loss(outputs.logits, batch["labels"])


class XmodForCausalLM(XmodLanguageModel):
    """Next-token logits float32 [B, T, V]: the LM head under causal self-attention.

    Needs `config.is_decoder=True` (`from_pretrained` sets it). Takes `past_key_values` from
    `xmod_jax.init_cache` for incremental decoding and, with `add_cross_attention`,
    `encoder_hidden_states`; see `xmod_jax.generate`.
    """

    hf_architecture: ClassVar[str] = "XmodForCausalLM"
    config_defaults: ClassVar[dict] = {"is_decoder": True}

    def compute_loss(self, outputs: XmodLogitsOutput, batch: Batch) -> jax.Array:
        return losses.causal_lm_loss(outputs.logits, batch["labels"])

    def setup_head(self) -> None:
        if not self.config.is_decoder:
            raise ValueError(
                "XmodForCausalLM needs config.is_decoder=True (causal self-attention); "
                "XmodForCausalLM.from_pretrained sets it, or use dataclasses.replace(config, "
                "is_decoder=True)"
            )
        super().setup_head()


class XmodForSequenceClassification(XmodHeadModel):
    """Sequence classification / regression logits float32 [B, num_labels] (no pooler)."""

    hf_architecture: ClassVar[str] = "XmodForSequenceClassification"
    head_params: ClassVar[tuple[str, ...]] = ("classifier",)
    uses_labels: ClassVar[bool] = True

    def compute_loss(self, outputs: XmodLogitsOutput, batch: Batch) -> jax.Array:
        return losses.sequence_classification_loss(
            outputs.logits, batch["labels"], self.config.problem_type
        )

    def setup_head(self) -> None:
        self.classifier = XmodClassificationHead(self.config, **self.inherited)

    def head(self, encoded, inputs, deterministic):
        return _logits_output(self.classifier(encoded.last_hidden_state, deterministic), encoded)


class XmodForTokenClassification(XmodHeadModel):
    """Per-token logits float32 [B, T, num_labels]."""

    hf_architecture: ClassVar[str] = "XmodForTokenClassification"
    head_params: ClassVar[tuple[str, ...]] = ("classifier",)
    uses_labels: ClassVar[bool] = True

    def compute_loss(self, outputs: XmodLogitsOutput, batch: Batch) -> jax.Array:
        return losses.token_classification_loss(outputs.logits, batch["labels"])

    def setup_head(self) -> None:
        self.dropout = nn.Dropout(classifier_dropout_rate(self.config))
        self.classifier = logits_dense(
            self.config, self.config.num_labels, self.param_dtype, "classifier"
        )

    def head(self, encoded, inputs, deterministic):
        h = self.dropout(encoded.last_hidden_state, deterministic=deterministic)
        return _logits_output(self.classifier(h), encoded)


class XmodForMultipleChoice(XmodHeadModel):
    """Choice scores float32 [B, C] from input_ids [B, C, T]; every choice of example b is
    routed to lang_ids[b] (transformers tiles the ids instead, see the README)."""

    hf_architecture: ClassVar[str] = "XmodForMultipleChoice"
    head_params: ClassVar[tuple[str, ...]] = ("classifier",)
    has_choices: ClassVar[bool] = True
    uses_pooler: ClassVar[bool] = True

    def compute_loss(self, outputs: XmodLogitsOutput, batch: Batch) -> jax.Array:
        return losses.multiple_choice_loss(outputs.logits, batch["labels"])

    def setup_head(self) -> None:
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)  # not classifier_dropout
        self.classifier = logits_dense(self.config, 1, self.param_dtype, "classifier")

    def head(self, encoded, inputs, deterministic):
        pooled = self.dropout(encoded.pooler_output, deterministic=deterministic)  # [B*C, D]
        scores = self.classifier(pooled).reshape(-1, inputs.num_choices)  # [B, C]
        return _logits_output(scores, encoded)


class XmodForQuestionAnswering(XmodHeadModel):
    """Span start / end logits float32 [B, T] (config.num_labels must be 2)."""

    hf_architecture: ClassVar[str] = "XmodForQuestionAnswering"
    head_params: ClassVar[tuple[str, ...]] = ("qa_outputs",)

    def compute_loss(self, outputs: XmodQuestionAnsweringOutput, batch: Batch) -> jax.Array:
        return losses.question_answering_loss(
            outputs.start_logits,
            outputs.end_logits,
            batch["start_positions"],
            batch["end_positions"],
        )

    def setup_head(self) -> None:
        if self.config.num_labels != 2:
            raise ValueError(
                f"XmodForQuestionAnswering needs num_labels=2 (start, end), got "
                f"{self.config.num_labels}"
            )
        self.qa_outputs = logits_dense(self.config, 2, self.param_dtype, "qa_outputs")

    def head(self, encoded, inputs, deterministic):
        logits = self.qa_outputs(encoded.last_hidden_state)  # [B, T, 2]
        return XmodQuestionAnsweringOutput(
            logits[..., 0], logits[..., 1], encoded.hidden_states, encoded.attentions
        )


HEAD_CLASSES = (
    XmodForMaskedLM,
    XmodForCausalLM,
    XmodForSequenceClassification,
    XmodForMultipleChoice,
    XmodForTokenClassification,
    XmodForQuestionAnswering,
)
ARCHITECTURES = {cls.hf_architecture: cls for cls in (XmodModel, *HEAD_CLASSES)}
# Top-level parameter names of every head (`lm_head`, `classifier`, `qa_outputs`).
HEAD_PARAMS = tuple(sorted({name for cls in HEAD_CLASSES for name in cls.head_params}))


def class_for(architectures: Sequence[str] | None) -> type[XmodPreTrainedModule]:
    """The first X-MOD class named in a config's `architectures`, else `XmodModel`."""
    return next((ARCHITECTURES[n] for n in architectures or () if n in ARCHITECTURES), XmodModel)
