"""The examples run, on reduced settings, and do what their docstrings promise."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import finetune_classification  # noqa: E402


def test_finetuning_learns_and_transfers_across_adapters(tmp_path):
    result = finetune_classification.run(steps=250, workdir=str(tmp_path), quiet=True)
    losses = result["losses"]
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 0.15  # the loss really falls
    accuracy = result["accuracy"]
    assert accuracy["en_XX"] > 0.75  # chance is 0.5
    assert set(accuracy) == {"en_XX", "de_DE", "sw_KE"}
    assert all(value > 0.6 for value in accuracy.values())
    assert result["best_step"] in (62, 124, 186, 248)  # one of the saved steps, restored
