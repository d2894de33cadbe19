"""Shared fixtures; shared functions and constants live in `helpers.py`."""

import jax
import pytest
from helpers import train_sample_tokenizer, train_tokenizer

# Parity is measured at full float32 matmul precision (TF32 on GPUs would blur it).
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(autouse=True)
def _highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    """A fresh folder per call under the session's temp root."""
    counter = iter(range(10**6))

    def make(name: str = "ckpt"):
        return tmp_path_factory.mktemp(f"{name}{next(counter)}")

    return make


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """The 302-id tokenizer of `helpers.train_tokenizer`, trained once per session."""
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def sample_tokenizer(tmp_path_factory):
    """The 1502-id tokenizer of `helpers.train_sample_tokenizer` (real text of 24 languages),
    trained once per session."""
    return train_sample_tokenizer(tmp_path_factory.mktemp("sample_tokenizer"))
