"""docs/quickstart.ipynb runs top to bottom in a real Jupyter kernel on a CPU (nbclient),
shows its result summaries and figures, and its progress bars are notebook widgets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<b>CaDeconResult</b>" in h for h in html) and any("<b>DeconvolutionResult</b>" in h for h in html)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the two figures
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    learned = re.search(r"learned rise ([\d.]+) s, decay ([\d.]+) s", text)
    assert learned and abs(float(learned.group(2)) / 0.6 - 1) < 0.2, text
    assert "converged: True" in text
    score = float(re.search(r"learned kernel: ([\d.]+)", text).group(1))
    raw = float(re.search(r"raw traces:\s+([\d.]+)", text).group(1))
    assert score > 0.7 and score > raw + 0.1, text
    # run_cadecon's progress bar is a widget in a notebook (tqdm.auto)
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return
    assert widgets, json.dumps(outputs)[:2000]
