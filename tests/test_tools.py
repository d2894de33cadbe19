"""The command-line tools in convert/, run as a user would, in a subprocess."""

import pathlib
import subprocess
import sys

from helpers import hf_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_check_parity_reports_ok_for_a_transformers_folder(checkpoint_dir):
    folder = checkpoint_dir()
    hf_model("XmodForTokenClassification", num_labels=3, pre_norm=True).save_pretrained(folder)
    result = subprocess.run(
        [
            sys.executable,
            ROOT / "convert/check_parity.py",
            folder,
            "--head",
            "XmodForTokenClassification",
            "--length",
            "12",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "logits" in result.stdout and "OK: worst" in result.stdout


def test_check_parity_fails_when_weights_differ(checkpoint_dir):
    folder = checkpoint_dir()
    hf_model("XmodForSequenceClassification").save_pretrained(folder)
    # The published-checkpoint situation: a head missing from the folder is random on both sides.
    result = subprocess.run(
        [sys.executable, ROOT / "convert/check_parity.py", folder, "--head", "XmodForMaskedLM"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "MISMATCH" in result.stdout
