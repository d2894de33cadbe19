"""The shared base of every public module: fields, the one call signature, init and checkpoints.

`from_pretrained` / `save_pretrained` are thin wrappers over `xmod_jax.ckpts.loading`: the one
place where `nn` reaches up into `ckpts` (imported inside the two methods, at call time), so that
loading reads as a method of the model, as in transformers.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmod_jax.config import XmodConfig
from xmod_jax.nn.cache import XmodCache
from xmod_jax.nn.inputs import ModelInputs, prepare_inputs
from xmod_jax.nn.layers import ChildFields, Dtype
from xmod_jax.nn.options import RuntimeOptions

Params = dict[str, Any]
Batch = dict[str, Any]  # call arguments plus targets (`labels`, `start_positions`, ...)


class XmodPreTrainedModule(ChildFields, nn.Module):
    """Fields: `config` (XmodConfig), `dtype` (computation), `param_dtype` (storage) and the
    runtime options `routing`, `attention_impl`, `scan_layers`, `remat` (see `nn/options.py`).

    Call: `model.apply({"params": params}, input_ids=None, lang_ids=None, attention_mask=None,
    token_type_ids=None, position_ids=None, inputs_embeds=None, output_hidden_states=False,
    output_attentions=False, deterministic=True)`, dropout rng in `rngs={"dropout": key}`.
    input_ids int [B, T] (`XmodForMultipleChoice`: [B, C, T]); lang_ids an int or int array of
    shape [], [1] or [B] (None: `config.default_language`). Decoders (`config.is_decoder`) also
    take `encoder_hidden_states` [B, S_enc, D] and `encoder_attention_mask` [B, S_enc]
    (cross-attention), `past_key_values` (an `init_cache` cache) and `use_cache`. LM heads
    (`XmodForMaskedLM`, `XmodForCausalLM`) also take `logits_positions` int [B, K]: the
    vocabulary logits are then computed at those positions only, [B, K, V] instead of [B, T, V].
    """

    # What each public class says about itself (read by loading, training and the CLI):
    hf_architecture: ClassVar[str] = ""  # transformers class name written to config.json
    head_params: ClassVar[tuple[str, ...]] = ()  # top-level parameter names of the head
    uses_labels: ClassVar[bool] = False  # outputs are named by config.id2label
    has_choices: ClassVar[bool] = False  # inputs carry a choice axis C
    takes_logits_positions: ClassVar[bool] = False  # logits at chosen positions (LM heads)
    config_defaults: ClassVar[dict[str, Any]] = {}  # config values from_pretrained sets

    config: XmodConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    routing: str = "gather"
    attention_impl: str = "fused"
    scan_layers: bool = False
    remat: str = "none"

    def __post_init__(self) -> None:
        self.options  # noqa: B018 -- validates the runtime options once, when the module is built
        super().__post_init__()

    @property
    def options(self) -> RuntimeOptions:
        """The runtime option fields as one value, for the blocks inside."""
        return RuntimeOptions(self.routing, self.attention_impl, self.scan_layers, self.remat)

    @property
    def runtime_fields(self) -> dict[str, Any]:
        """dtypes and runtime options as public-module fields, for a public module inside."""
        return {**self.dtypes, **dataclasses.asdict(self.options)}

    def __call__(
        self,
        input_ids: Any = None,
        lang_ids: Any = None,
        attention_mask: Any = None,
        token_type_ids: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        encoder_hidden_states: Any = None,
        encoder_attention_mask: Any = None,
        past_key_values: XmodCache | None = None,
        use_cache: bool | None = None,
        logits_positions: Any = None,
    ) -> Any:
        inputs = prepare_inputs(
            self.config,
            input_ids=input_ids,
            lang_ids=lang_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            logits_positions=logits_positions,
            has_choices=self.has_choices,
            takes_logits_positions=self.takes_logits_positions,
        )
        return self.forward(
            inputs,
            deterministic=deterministic,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )

    def forward(
        self,
        inputs: ModelInputs,
        *,
        deterministic: bool,
        output_hidden_states: bool,
        output_attentions: bool,
    ) -> Any:
        raise NotImplementedError  # each public module defines its computation

    # ------------------------------------------------------------------------ parameters
    def dummy_inputs(self) -> dict[str, jax.Array]:
        """The smallest valid inputs, for `init` and shape evaluation."""
        shape = (1, 1, 1) if self.has_choices else (1, 1)
        inputs = {"input_ids": jnp.zeros(shape, jnp.int32), "lang_ids": jnp.zeros((1,), jnp.int32)}
        if self.config.add_cross_attention:  # so that init creates the cross-attention weights
            inputs["encoder_hidden_states"] = jnp.zeros((1, 1, self.config.hidden_size))
        return inputs

    def init_params(self, rng: jax.Array | int = 0) -> Params:
        """Randomly initialised params (transformers' init scheme) as a plain nested dict."""
        if isinstance(rng, int):
            rng = jax.random.key(rng)
        return _jitted_init(self)(rng)

    def param_shapes(self) -> Params:
        """`jax.ShapeDtypeStruct` tree of the params, without allocating them."""
        return jax.eval_shape(_unboxed_init(self), jax.random.key(0))

    # ----------------------------------------------------------------------- checkpoints
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        num_labels: int | None = None,
        id2label: Any = None,
        default_language: str | None = None,
        ignore_mismatched_sizes: bool = False,
        seed: int = 0,
        progress: bool = False,
        **module_fields: Any,
    ) -> tuple[XmodPreTrainedModule, Params]:
        """Load a checkpoint -> (model, params); see `xmod_jax.ckpts.loading`.

        path: a transformers folder, an orbax folder written by `convert/hf_to_flax.py`, the
        bundled model's name (`xmod_jax.BUNDLED_MODEL`, read from the package), or a Hugging Face
        hub name (downloaded with `huggingface_hub` when installed).
        """
        from xmod_jax.ckpts.loading import load_pretrained

        return load_pretrained(
            cls,
            path,
            dtype=dtype,
            param_dtype=param_dtype,
            num_labels=num_labels,
            id2label=id2label,
            default_language=default_language,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            seed=seed,
            progress=progress,
            module_fields=module_fields,
        )

    def save_pretrained(
        self, folder: str | os.PathLike, params: Params, progress: bool = False
    ) -> None:
        """Write `config.json` + `model.safetensors` that the matching transformers class loads."""
        from xmod_jax.ckpts.loading import save_pretrained

        save_pretrained(self, params, folder, progress)


def _unboxed_init(model: XmodPreTrainedModule):
    def init(rng: jax.Array) -> Params:
        variables = model.init({"params": rng}, **model.dummy_inputs())
        return nn.meta.unbox(variables["params"])

    return init


@functools.lru_cache(maxsize=16)
def _jitted_init(model: XmodPreTrainedModule):
    return jax.jit(_unboxed_init(model))
