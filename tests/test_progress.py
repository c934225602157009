"""One progress policy and one bar factory (calab._progress) for the whole library."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from calab import _progress

PACKAGE = Path(__file__).resolve().parents[1] / "calab"


def test_only_the_factory_imports_tqdm():
    importers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "tqdm" or name.startswith("tqdm.") for name in names):
                importers.append(str(path.relative_to(PACKAGE.parent)))
    assert importers == ["calab/_progress.py"]


def test_a_terminal_bar_writes_to_stderr(capsys):
    bar = _progress.progress_bar(4, "solving", unit="cell")
    bar.update(4)
    bar.close()
    err = capsys.readouterr().err
    assert "solving" in err and "0/4" in err and "cell" in err


def test_automatic_display_on_a_terminal_or_in_a_notebook(monkeypatch):
    monkeypatch.setattr(_progress, "stderr_is_tty", lambda: False)
    monkeypatch.delitem(sys.modules, "ipykernel.zmqshell", raising=False)
    assert not _progress.show_by_default()
    assert _progress.progress_reporter(None, 10, 10 * _progress.PROGRESS_MIN_SAMPLES) == (None, None)
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    assert _progress.show_by_default()
    monkeypatch.setattr(_progress, "stderr_is_tty", lambda: True)
    monkeypatch.delitem(sys.modules, "ipykernel.zmqshell")
    assert _progress.show_by_default()
    # small solves stay silent even on a terminal
    assert _progress.progress_reporter(None, 10, 100) == (None, None)
    advance, close = _progress.progress_reporter(None, 10, _progress.PROGRESS_MIN_SAMPLES)
    advance(10)
    close()


def test_dataset_and_cadecon_bars_come_from_the_factory(tmp_path, capsys):
    import calab

    traces = np.random.default_rng(0).standard_normal((6, 300)).cumsum(axis=1)
    np.save(tmp_path / "in.npy", traces)
    calab.deconvolve_dataset(tmp_path / "in.npy", tmp_path / "out.zarr", fs=30.0, tau_r=0.1, tau_d=0.6, lam=0.5,
                             chunk_cells=3, backend="numpy", progress=True)
    err = capsys.readouterr().err
    assert "calab out.zarr" in err and "100%" in err
    from calab.cadecon.progress import CaDeconProgress, make_reporter

    report, close = make_reporter(True, 4)
    report(CaDeconProgress(iteration=2, max_iterations=4, phase="kernel-update", phase_progress=1.0, tau_rise=0.1,
                           tau_decay=0.6, kernel_rmse=None, status="running", history=[]))
    close()
    err = capsys.readouterr().err
    assert "CaDecon kernel" in err and "it" in err


@pytest.mark.slow
def test_a_notebook_gets_a_widget():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("ipywidgets")
    cell = ("from calab._progress import progress_bar, show_by_default\n"
            "bar = progress_bar(3, 'cells')\n"
            "bar.update(3); bar.close()\n"
            "print(show_by_default(), any(c.__module__ == 'tqdm.notebook' for c in type(bar).__mro__))\n")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    root = PACKAGE.parent
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(root)}}).execute()
    outputs = notebook.cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o["name"] == "stdout")
    assert text.split() == ["True", "True"], outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
