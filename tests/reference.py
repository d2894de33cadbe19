"""The parity oracle: tiny random transformers X-MOD models, saved with `save_pretrained`.

Every reference number in the tests comes from transformers' own torch classes built here.
Parameters are perturbed away from transformers' init (LayerNorm weights 1, biases 0, zero pad
rows) so a wrong LayerNorm, bias or pad-row mapping cannot hide.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import transformers

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    type_vocab_size=2,
    layer_norm_eps=1e-5,
    languages=["en_XX", "de_DE", "fr_XX"],
)
BASE_FLAGS = dict(  # facebook/xmod-base and its 13/30/60/75-language siblings
    pre_norm=False,
    adapter_layer_norm=False,
    adapter_reuse_layer_norm=True,
    ln_before_adapter=True,
    adapter_reduction_factor=2,
)
LARGE_FLAGS = dict(  # facebook/xmod-large-prenorm
    pre_norm=True,
    adapter_layer_norm=True,
    adapter_reuse_layer_norm=False,
    ln_before_adapter=False,
    adapter_reduction_factor=4,
)
FLAG_NAMES = ("pre_norm", "adapter_layer_norm", "adapter_reuse_layer_norm", "ln_before_adapter")
ALL_FLAG_COMBOS = [
    dict(zip(FLAG_NAMES, v, strict=True)) for v in itertools.product((False, True), repeat=4)
]

# A padded batch mixing languages in no particular order (lang ids index TINY["languages"]).
INPUT_IDS = np.array(
    [
        [0, 5, 6, 7, 8, 9, 10, 2],
        [0, 11, 12, 13, 2, 1, 1, 1],
        [0, 14, 2, 1, 1, 1, 1, 1],
        [0, 15, 16, 17, 18, 19, 2, 1],
    ]
)
ATTENTION_MASK = (INPUT_IDS != 1).astype(np.int64)
LANG_IDS = np.array([2, 0, 1, 0])


def hf_config(**overrides) -> transformers.XmodConfig:
    return transformers.XmodConfig(**{**TINY, **overrides}, attn_implementation="eager")


def hf_model(class_name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A transformers X-MOD class with perturbed random weights, in eval mode."""
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(hf_config(**overrides)).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def random_params(model, seed: int = 0, scale: float = 0.1) -> dict:
    """Params for any of our modules without compiling `init`: N(0, scale) everywhere, plus one
    on LayerNorm scales; enough for round trips and routing checks (not transformers' init)."""
    import jax

    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        value = scale * rng.standard_normal(leaf.shape)
        if path[-1].key == "scale":
            value += 1.0
        return jax.numpy.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, model.param_shapes())


def run_hf(model: torch.nn.Module, **inputs) -> dict:
    """Outputs of a transformers model as numpy arrays (tuples for hidden states/attentions)."""
    tensors = {k: torch.as_tensor(v) for k, v in inputs.items() if not isinstance(v, bool)}
    flags = {k: v for k, v in inputs.items() if isinstance(v, bool)}
    with torch.no_grad():
        out = model(**tensors, **flags)
    result = {}
    for key, value in out.items():
        if isinstance(value, tuple):
            if value:  # transformers reports cross_attentions=() for encoders
                result[key] = tuple(v.numpy() for v in value)
        elif isinstance(value, torch.Tensor):
            result[key] = value.numpy()
    return result


def max_abs_diff(ours, theirs) -> float:
    """Largest |difference| over matching arrays or tuples of arrays."""
    if isinstance(theirs, tuple):
        assert len(ours) == len(theirs), (len(ours), len(theirs))
        return max(max_abs_diff(a, b) for a, b in zip(ours, theirs, strict=True))
    ours = np.asarray(ours, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.max(np.abs(ours - theirs)))


def assert_outputs_match(ours, theirs: dict, atol: float = 1e-5) -> None:
    """Every field transformers returned equals ours within atol."""
    assert theirs, "reference returned nothing"
    for name, ref in theirs.items():
        if name in ("loss", "past_key_values"):
            continue
        diff = max_abs_diff(getattr(ours, name), ref)
        assert diff <= atol, f"{name}: max abs diff {diff:.3g} > {atol}"
