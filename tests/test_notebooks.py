"""The notebooks run top to bottom, headless, on CPU; they are committed without outputs and
start by installing the package."""

import pathlib
import time

import nbformat
import pytest

NOTEBOOKS = sorted(
    (pathlib.Path(__file__).resolve().parent.parent / "examples/notebooks").glob("*.ipynb")
)
NAMES = [path.name for path in NOTEBOOKS]


def test_the_notebooks_are_there():
    assert NAMES == ["finetune_transfer.ipynb", "tour.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} has outputs"
    assert "widgets" not in notebook.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_first_code_cell_installs_the_package(path):
    first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert 'find_spec("xmod_jax") is None' in first.source
    assert '"pip", "install"' in first.source and "xmod-jax[notebook]" in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_runs_top_to_bottom(path, tmp_path):
    """Every cell runs without an error, in a fresh kernel (about a minute each on 2 cores)."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    start = time.time()
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    print(f"{path.name}: {time.time() - start:.0f} s")
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    if path.name == "tour.ipynb":
        assert "new compilations for three other language mixes: 0" in text
        assert "parameters:" in text and len(images) == 2
        assert sum("text/html" in o.get("data", {}) for o in outputs) >= 4  # config, tables, tree
    else:
        assert "bit-identical to the straight run: True" in text
        assert "own adapter" in text and len(images) >= 2
        assert "same predictions: True" in text or "transformers is not installed" in text
