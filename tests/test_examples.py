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


def test_pretrain_and_model_card_run_on_the_corpus_sample(tmp_path, sample_tokenizer):
    """examples/pretrain.py (tiny settings, stopped and resumed, exported) and
    examples/model_card.py on its export: the card, eval.json and the heatmap appear, with every
    language's numbers."""
    import json
    import shutil

    import model_card
    import pretrain
    from helpers import CORPUS_SAMPLE, sample_languages

    import xmod_jax as xj

    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS_SAMPLE, corpus)
    codes = sample_languages()
    totals = {
        code: {"totals": {"train": {"chars": len((corpus / f"{code}.train.txt").read_text()),
                                    "bytes": (corpus / f"{code}.train.txt").stat().st_size}}}
        for code in codes
    }  # fmt: skip
    (corpus / "manifest.json").write_text(json.dumps({"languages": totals}))
    vocab = tmp_path / "vocab"
    sample_tokenizer.save_pretrained(vocab)
    work, export = tmp_path / "run", tmp_path / "model"
    args = [
        "--corpus", str(corpus), "--vocab", str(vocab), "--workdir", str(work),
        "--steps", "12", "--warmup", "2", "--batch", "4", "--seq-len", "32", "--hidden", "64",
        "--layers", "1", "--eval-every", "12", "--checkpoint-every", "4", "--min-chars", "1",
        "--eval-rows", "2", "--export", str(export),
    ]  # fmt: skip
    pretrain.main([*args, "--stop-after", "5"])
    assert not export.exists()  # stopped before the last step: nothing exported
    pretrain.main(args)  # resumes from step 4
    model, _ = xj.XmodForMaskedLM.from_pretrained(export)
    assert sorted(model.config.languages) == sorted(codes)
    assert model.config.hidden_dropout_prob == 0.1  # set back for fine-tuning
    saved = json.loads((export / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == 32  # 34 position rows, positions start at 2
    model_card.main(["--model", str(export), "--corpus", str(corpus), "--workdir", str(work),
                     "--rows-per-language", "2", "--unigram-chars", "5000"])  # fmt: skip
    results = json.loads((export / "eval.json").read_text())
    assert sorted(results["languages"]) == sorted(codes)
    assert results["training"]["steps"] == 12
    card = (export / "README.md").read_text()
    assert all(f"| {code} |" in card for code in codes)
    # The heatmap needs the plots extra (matplotlib): drawn and shown where it is installed,
    # otherwise absent and not linked from the card.
    try:
        import matplotlib  # noqa: F401

        drawn = True
    except ImportError:
        drawn = False
    assert (export / "adapter_losses.png").exists() == drawn
    assert ("adapter_losses.png" in card) == drawn
    if drawn:
        assert (export / "adapter_losses.png").stat().st_size > 1000
