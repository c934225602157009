"""tune() in a real Jupyter kernel (through nbclient) shows the page inline in the cell.

The kernel's output must hold an ``<iframe>`` on the loopback bridge (no browser tab is
opened).  Skipped without nbclient/ipykernel.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tune_displays_the_page_inline_in_a_jupyter_kernel():
    cell = (
        "import webbrowser, numpy as np, calab\n"
        "webbrowser.open = lambda url: print('TAB OPENED')\n"
        "params = calab.tune(np.ones((2, 50)), 30.0, timeout=1)\n"
        "print('returned', params, calab.__file__)\n"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    outputs = notebook.cells[0].outputs
    html = [o["data"]["text/html"] for o in outputs if o.get("output_type") == "display_data"
            and "text/html" in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert len(html) == 1, outputs
    src = re.search(r'src="([^"]+)"', html[0]).group(1)
    assert re.match(r"http://127\.0\.0\.1:\d+/pages/catune/index\.html\?bridge=http://127\.0\.0\.1:\d+&"
                    r"bridge_secret=[0-9a-f]{64}$", src.replace("&amp;", "&"))
    assert "TAB OPENED" not in text and "returned None" in text
    assert str(ROOT / "calab") in text  # the kernel ran this checkout's calab
