"""notebooks/demo.ipynb: stored without outputs, and executed from top to bottom (nbclient)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "demo.ipynb"


def test_demo_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code"
    assert all(c.outputs == [] and c.execution_count is None for c in code), "strip the outputs before committing"
    assert code[0].source.lstrip().startswith("#") and "%pip install" in code[0].source  # Colab install line


def test_demo_notebook_runs(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    # the kernel runs this interpreter (its kernelspec starts "python" from PATH)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("WANDB_MODE", "offline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (with the traceback) if any cell fails

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    # lens grid, grid with predictions, truth against prediction, three critical curves, the population's shrinkage
    assert len(figures) >= 7, f"{len(figures)} figures"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "within 1 sigma" in text
    predictions = (tmp_path / "demo_outputs" / "predict" / "predictions.csv").read_text().splitlines()
    assert predictions[0].startswith("image,status,theta_E,theta_E_sigma") and len(predictions) == 5
    real = (tmp_path / "demo_outputs" / "real" / "predictions.csv").read_text().splitlines()
    assert len(real) == 2 and ",ok," in real[1] and real[0].endswith(",flags")  # one cutout as obtained
    assert (tmp_path / "demo_outputs" / "train" / ".hydra" / "config.yaml").is_file()
    population = (tmp_path / "demo_outputs" / "population" / "summary.csv").read_text()
    assert population.startswith("hyperparameter,median") and "theta_E.scatter" in population
