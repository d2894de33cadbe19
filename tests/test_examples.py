"""The examples run, on reduced settings, and do what their docstrings promise."""

import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import optax

import xmod_jax as xj

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import finetune_classification  # noqa: E402
import quickstart  # noqa: E402

RUN_AS_MAIN = (  # the quickstart as `python examples/quickstart.py` runs it, then what it imported
    "import runpy, sys; sys.argv = [sys.argv[1]]; runpy.run_path(sys.argv[0], run_name='__main__');"
    " print('torch imported:', 'torch' in sys.modules)"
)


def test_finetuning_learns_and_transfers_across_adapters(tmp_path):
    result = finetune_classification.run(steps=250, workdir=str(tmp_path), quiet=True)
    losses = result["losses"]
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 0.15  # the loss really falls
    accuracy = result["accuracy"]
    assert accuracy["en_XX"] > 0.75  # chance is 0.5
    assert set(accuracy) == {"en_XX", "de_DE", "sw_KE"}
    assert all(value > 0.6 for value in accuracy.values())
    assert result["best_step"] in (62, 124, 186, 248)  # one of the saved steps, restored


def test_transfer_runs_on_the_bundled_task(tmp_path):
    """examples/transfer.py end to end (2 seeds of 3 steps): every test language is scored
    through its own adapter and the English one, the table and results are written."""
    import json
    import shutil

    import transfer

    from xmod_jax.tasks import BUNDLED_TASK_FOLDER

    task = tmp_path / "task"
    shutil.copytree(BUNDLED_TASK_FOLDER, task)
    out = tmp_path / "out"
    table = transfer.main(
        ["--task", str(task), "--out", str(out), "--seeds", "0", "1", "--steps", "3",
         "--eval-every", "3", "--max-length", "16", "--batch", "8"]
    )  # fmt: skip
    assert sorted(table) == ["da_DK", "de_DE", "en_XX", "fr_XX", "it_IT"]
    results = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in results["runs"]] == [0, 1]
    for run in results["runs"]:
        assert run["own"]["de_DE"]["n"] == 84 and run["source"]["de_DE"]["n"] == 84
        assert len(run["losses"]) == 3
    assert table["en_XX"]["own"] == table["en_XX"]["source"]  # English rows: the same adapter
    assert "| de_DE | 84 |" in (out / "transfer.md").read_text()


def test_pretrain_and_model_card_run_on_the_corpus_sample(tmp_path, sample_tokenizer):
    """examples/pretrain.py (tiny settings, stopped and resumed, exported) and
    examples/model_card.py on its export: the card, eval.json and the heatmap appear, with every
    language's numbers."""
    import json

    import model_card
    import pretrain
    from helpers import corpus_sample_copy, sample_languages

    import xmod_jax as xj

    corpus = corpus_sample_copy(tmp_path / "corpus")
    codes = sample_languages()
    vocab = tmp_path / "vocab"
    sample_tokenizer.save_pretrained(vocab)
    work, export = tmp_path / "run", tmp_path / "model"
    args = [
        "--corpus", str(corpus), "--vocab", str(vocab), "--workdir", str(work),
        "--steps", "12", "--warmup", "2", "--batch", "4", "--seq-len", "32", "--hidden", "64",
        "--layers", "1", "--eval-every", "12", "--checkpoint-every", "4", "--min-chars", "1",
        "--eval-rows", "2", "--export", str(export),
    ]  # fmt: skip
    shared = tmp_path / "shared"
    shared_args = [str(shared) if a == str(work) else a for a in args[:-1]]  # own workdir
    pretrain.main([*shared_args, str(shared / "model"), "--shared"])
    model, _ = xj.XmodForMaskedLM.from_pretrained(shared / "model")
    assert model.config.languages == ("xx_XX",)  # the shared baseline: one adapter for all
    evals = [json.loads(line) for line in (shared / "log.jsonl").read_text().splitlines()]
    assert sorted(evals[-1]["eval"]) == sorted(codes)  # every language scored, through it
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


def test_quickstart_prints_every_section_without_torch(tmp_path):
    script = str(ROOT / "examples" / "quickstart.py")
    result = subprocess.run(
        [sys.executable, "-c", RUN_AS_MAIN, script],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"loaded {xj.BUNDLED_MODEL} in " in out and "16 language adapters" in out
    assert "fill-mask, one mixed batch of 8 languages, each row its own adapter:" in out
    for code, text in quickstart.SENTENCES.items():
        assert re.search(rf"  {code}  {re.escape(text)}\n +-> \S+ [\d.]+  \S+ [\d.]+  \S+ ", out)
    same = re.search(r"top-3 tokens in (\d) of 8 rows, largest score difference (\S+)\n", out)
    assert same and same[1] == "8" and float(same[2]) <= 1e-6, out
    for code in quickstart.ADAPTERS_SHOWN:
        assert re.search(rf"  {code} adapter -> \S+ ", out)
    assert "through all 16 adapters in one call; mean masked-token loss" in out
    assert re.search(r"de_DE, its own adapter: [\d.]+, rank \d+ of 16\n  best: ", out)
    assert re.search(r"compilations after loading: 2 \(fill-mask forward: 1 for 10 calls", out)
    assert out.endswith("torch imported: False\n")


def test_quickstart_adapter_losses_route_every_row(tmp_path):
    """The one-call sweep over adapters equals the loss of each adapter's rows run alone."""
    model, params = xj.XmodForMaskedLM.from_pretrained(xj.BUNDLED_MODEL)
    tokenizer = xj.XmodTokenizer.from_pretrained(xj.BUNDLED_MODEL)
    text = "Das Programm läuft auf der Kommandozeile."
    losses = quickstart.adapter_losses(model, params, tokenizer, text)
    assert list(losses) == list(model.config.languages)
    batch = quickstart.masked_token_batch(tokenizer, text)
    for code in ("de_DE", "ja_XX"):
        logits = model.apply(
            {"params": params}, batch["input_ids"], lang_ids=model.config.lang_ids(code),
            logits_positions=batch["logits_positions"],
        ).logits[:, 0]  # fmt: skip
        expected = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"][:, 0])
        np.testing.assert_allclose(losses[code], float(jax.numpy.mean(expected)), atol=1e-5)
