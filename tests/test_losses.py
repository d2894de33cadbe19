"""Loss and gradient parity with transformers' torch heads (loss within 1e-5; gradients per
leaf within 1e-4 of the largest torch gradient, pad rows of the embedding tables included)."""

import jax
import numpy as np
import pytest
from helpers import ATTENTION_MASK, INPUT_IDS, LANG_IDS, from_torch, hf_model, needs_torch, torch

import xmod_jax as xj
from xmod_jax.ckpts.mapping import params_to_hf
from xmod_jax.nn import losses

rng = np.random.default_rng(0)
MLM_LABELS = np.where(rng.random(INPUT_IDS.shape) < 0.3, INPUT_IDS, -100)
MLM_LABELS[0, 2] = 7
TOKEN_LABELS = np.where(ATTENTION_MASK == 1, rng.integers(0, 4, INPUT_IDS.shape), -100)
CHOICES = np.stack([INPUT_IDS[:3], INPUT_IDS[1:], INPUT_IDS[[0, 2, 3]]])

CASES = {
    "masked-lm": ("XmodForMaskedLM", {}, {"labels": MLM_LABELS}),
    "causal-lm": (
        "XmodForCausalLM",
        {"is_decoder": True},
        {"labels": np.where(ATTENTION_MASK == 1, INPUT_IDS, -100)},
    ),
    "regression": (
        "XmodForSequenceClassification",
        {"num_labels": 1},
        {"labels": np.array([0.5, -1.0, 2.0, 0.1], np.float32)},
    ),
    "single-label": (
        "XmodForSequenceClassification",
        {"num_labels": 3},
        {"labels": np.array([0, 2, 1, 2])},
    ),
    "multi-label": (
        "XmodForSequenceClassification",
        {"num_labels": 3, "problem_type": "multi_label_classification"},
        {"labels": np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]], np.float32)},
    ),
    "token-classification": (
        "XmodForTokenClassification",
        {"num_labels": 4},
        {"labels": TOKEN_LABELS},
    ),
    "question-answering": (
        "XmodForQuestionAnswering",
        {},
        {"start_positions": np.array([1, 3, 0, 20]), "end_positions": np.array([2, 5, 1, 4])},
    ),
    "multiple-choice": ("XmodForMultipleChoice", {}, {"labels": np.array([2, 0, 1])}),
}


def _inputs(class_name):
    if class_name == "XmodForMultipleChoice":
        return {
            "input_ids": CHOICES,
            "attention_mask": (CHOICES != 1).astype(np.int64),
            "lang_ids": np.array([1]),
        }
    return {"input_ids": INPUT_IDS, "attention_mask": ATTENTION_MASK, "lang_ids": LANG_IDS}


@pytest.mark.parametrize("case", CASES)
def test_loss_and_gradients_match_torch(case):
    class_name, overrides, targets = CASES[case]
    reference = hf_model(class_name, **overrides)  # eval mode: dropout off on both sides
    model, params = from_torch(reference)

    inputs = _inputs(class_name)
    torch_out = reference(**{k: torch.as_tensor(v) for k, v in {**inputs, **targets}.items()})
    torch_out.loss.backward()
    torch_grads = {
        name: p.grad.numpy() for name, p in reference.named_parameters() if p.grad is not None
    }

    loss_fn = losses.loss_for(model)
    batch = {**inputs, **targets}

    def loss_of(params):
        return loss_fn(model.apply({"params": params}, **inputs), batch)

    loss, grads = jax.value_and_grad(loss_of)(params)
    assert abs(float(loss) - torch_out.loss.item()) <= 1e-5

    our_grads = params_to_hf(grads, xj.logical_axes(model), model.config.languages)
    assert set(torch_grads) <= set(our_grads)
    for name, expected in torch_grads.items():
        diff = np.max(np.abs(our_grads[name] - expected))
        assert diff <= 1e-4 * np.max(np.abs(expected)) + 1e-6, f"{name}: {diff:.3g}"
    untouched = set(our_grads) - set(torch_grads)  # e.g. the pooler, unused by this head
    for name in untouched:
        assert not np.any(our_grads[name]), name
    # torch's padding_idx: the pad rows get no gradient from the lookups (the tied LM decoder
    # still sends the word table's pad row one, on both sides)
    pad = model.config.pad_token_id
    assert not np.any(our_grads["roberta.embeddings.position_embeddings.weight"][pad])
    if "lm_head.bias" not in our_grads:
        assert not np.any(our_grads["roberta.embeddings.word_embeddings.weight"][pad])


@needs_torch
def test_nothing_to_score_gives_nan_like_torch():
    logits = np.zeros((1, 3, 5), np.float32)
    labels = np.full((1, 3), -100)
    ours = float(losses.masked_lm_loss(logits, labels))
    theirs = torch.nn.functional.cross_entropy(
        torch.as_tensor(logits).view(-1, 5), torch.as_tensor(labels).view(-1)
    ).item()
    assert np.isnan(ours) and np.isnan(theirs)


def test_loss_for_refuses_the_bare_encoder():
    with pytest.raises(ValueError, match="no training loss"):
        losses.loss_for(xj.XmodModel(xj.XmodConfig()))
