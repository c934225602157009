"""``python -m calab.cli``: the same as the ``calab`` command."""

from calab.cli import main

raise SystemExit(main())
