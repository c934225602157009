"""``python -m calab._cli ...``: the command line at the module path calab 0.3.0 used.

Scripts written against 0.3.0 run ``python -m calab._cli``; it is the same program as the
``calab`` command and ``python -m calab`` (:func:`calab.cli.main`).  This is the only
private module path kept for compatibility.
"""

from __future__ import annotations

from calab.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
