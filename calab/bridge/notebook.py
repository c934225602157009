"""Show a bridge page inline when Python runs in a Jupyter or Colab kernel.

In Jupyter the page is an ``<iframe>`` on the loopback server (the browser and the
kernel share a machine).  In Google Colab the kernel's loopback is not the user's, so the
page goes through Colab's port proxy (``google.colab.output.serve_kernel_port_as_iframe``)
and talks to the bridge on its own origin (the built-in pages accept a same-origin
bridge when given only ``bridge_secret``).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["display_inline", "notebook_kind"]

#: height of the inline page in pixels
IFRAME_HEIGHT = 820


def _ipython() -> Any:
    module = sys.modules.get("IPython")
    if module is None:
        return None
    try:
        return module.get_ipython()
    except Exception:  # noqa: BLE001
        return None


def notebook_kind() -> str | None:
    """``"colab"``, ``"jupyter"`` or None (a plain script or terminal IPython)."""
    shell = _ipython()
    if shell is None:
        return None
    if "google.colab" in sys.modules:
        return "colab"
    if getattr(shell, "kernel", None) is not None:
        return "jupyter"
    return None


def display_inline(kind: str, url: str, port: int, path_and_query: str) -> None:
    """Display the page in the current output cell.

    Parameters
    ----------
    kind : str
        ``"jupyter"`` or ``"colab"`` (from :func:`notebook_kind`).
    url : str
        Full loopback launch URL (used in Jupyter).
    port : int
        Bridge port (Colab proxies it).
    path_and_query : str
        Same-origin page path plus query, e.g. ``/pages/catune/index.html?bridge_secret=...``.
    """
    if kind == "colab":
        from google.colab import output  # type: ignore[import-not-found]

        output.serve_kernel_port_as_iframe(port, path=path_and_query, height=IFRAME_HEIGHT)
        return
    from IPython.display import IFrame, display

    display(IFrame(src=url, width="100%", height=IFRAME_HEIGHT))
