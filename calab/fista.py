"""Compatibility alias of :mod:`calab.engine.fista` (the solver core moved into ``calab/engine``)."""

from calab.engine.fista import *  # noqa: F401,F403
from calab.engine.fista import (  # noqa: F401 - names used by older callers and tests
    MIN_ITERATIONS,
    TOLERANCE_SQUARED,
    Operator,
    build_operator,
    data_gradient,
    gradient_at,
    initial_state,
    make_operator,
    operator_arrays,
)
