"""The solver, written once: problem description, FISTA core, block-level solve.

Layers (each imports only the ones below it)::

    calab.engine.block    solve_block: one chunk of cells in, results out (plan cache)
    calab.engine.fista    SolvePlan, operators (FFT / AR(2) / upsampled), the FISTA step,
                          the host driver, solve_batch
    calab.engine.problem  Problem, KernelTaps, AR2, StoppingRule (plain data)

Typical use::

    from calab.engine import AR2, Problem, StoppingRule, solve_block

    problem = Problem(AR2.from_taus(0.1, 0.6, 300.0), StoppingRule.indeca(500), "box01")
    result = solve_block(problem, traces_up, x0=warm, backend="numpy")
"""

from calab.engine.block import BlockResult, apply_operator, clear_plan_cache, get_plan, solve_block
from calab.engine.problem import AR2, CONSTRAINTS, KernelTaps, OperatorSpec, Problem, StoppingRule

__all__ = [
    "AR2",
    "BlockResult",
    "CONSTRAINTS",
    "KernelTaps",
    "OperatorSpec",
    "Problem",
    "StoppingRule",
    "apply_operator",
    "clear_plan_cache",
    "get_plan",
    "solve_block",
]
