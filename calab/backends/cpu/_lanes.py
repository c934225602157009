"""FISTA with a recursive operator, one cell per SIMD lane (CPU backend).

Two operators have recursions: the banded AR(2) operator (InDeCa, ``conv_mode="banded"``)
and FFT mode's kernel from :func:`calab.build_kernel`, a truncated difference of two
exponentials (``SolvePlan.exponentials``).  A recursion is sequential in time, so a
single cell's waits ~10 cycles per sample.  Here a block of ``W ≤ MAX_LANES`` cells is
stored time-major (``(n, W)``: the ``W`` cells' samples of one time step are adjacent)
and every step of every recursion advances all ``W`` cells with one vector operation
(:mod:`._simd`).  One iteration is two passes over memory:

* **pass A** (ascending time): ``e = K y − data``, the forward recursion and the
  residual;
* **pass B** (descending time): the adjoint recursion on ``e`` gives the gradient one
  sample at a time, and the proximal step, the extrapolation and the float64 sums of the
  restart and convergence tests are applied to that sample right away.

AR(2): each lane performs exactly the float32 operations of the reference, in its order
(the vectors carry no fast-math flag), so a cell's iterates are bit-identical to the
row-by-row kernels of :mod:`._kernels`.  Difference of exponentials: four float64
first-order recursions per direction (``Σ_{j<N} d^j s[t−j] = R[t] − d^N R[t−N]``, the
lagged term being the same recursion on the input delayed by ``N``), the model, residual
and gradient rounded to float32 where the reference rounds them.  The three float64
sums accumulate from the end of the trace backwards, sequentially per cell (the row
kernels reassociate them); they feed only the restart sign and the 1e-8 convergence
test.

Per-cell control (momentum ``t``, restart, convergence, the iteration cap) runs per lane
inside the kernel; finished lanes are frozen by a mask, so when the driver harvests them
does not change their result.

Pass A waits on its recursion (a few vector operations per sample, one sample at a time)
while pass B is bound by its arithmetic.  9-16 cells therefore run as a **pair** of
blocks (:class:`LanePair`: 8 cells, and the rest): one loop advances block P's pass B and
block Q's pass A together, the next Q's pass B and P's pass A of the following iteration.
Each block takes exactly its own steps, so a pair computes what two single blocks do;
10 cells as 8 + 2 lanes cost about 1.2 single 8-lane blocks per iteration, where two
blocks of 5 cells in 8 lanes cost 2 (90,000 samples, AVX-512 machine).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calab.backends.driver import FistaBatch

__all__ = ["MAX_LANES", "LaneBatch", "LanePair", "lane_blocks", "lanes_apply"]

#: cells per lane block.  8 float32 lanes are one AVX2 register (their float64 sums two,
#: see :data:`SUM_GROUP`); wider blocks cost more per cell (measured on AVX-512, and a block
#: of 90,000-sample rows no longer fits the core's caches)
MAX_LANES = 8
#: iterations per kernel call between two looks at the active lanes
STEPS_PER_CALL = 32

# Per-lane control, shared by every kernel: momentum and masks before an iteration,
# iteration count, restart and convergence after it.
_CONTROL = """
def prepare{tag}(t, active, restart, t_next, momentum, running_flag, restart_flag):
    running = 0
    restarting = 0
    for lane in range({lanes}):
        t_next[lane] = (1.0 + np.sqrt(1.0 + 4.0 * t[lane] * t[lane])) / 2.0
        momentum[lane] = np.float32((t[lane] - 1.0) / t_next[lane])
        live = active[lane]
        running_flag[lane] = np.float32(1.0) if live else np.float32(0.0)
        restart_flag[lane] = np.float32(1.0) if live and restart[lane] else np.float32(0.0)
        if live:
            running += 1
            if restart[lane]:
                restarting += 1
    return running, restarting


def finish{tag}(sums, t, t_next, k, active, converged, restart, min_iterations, cap, tolerance_squared):
    W = {lanes}
    for lane in range(W):
        if not active[lane]:
            continue
        count = k[lane] + 1
        k[lane] = count
        restarted = count > 1 and sums[2 * W + lane] > 0.0
        restart[lane] = restarted
        t[lane] = 1.0 if restarted else t_next[lane]
        done = count > min_iterations and sums[lane] < tolerance_squared * (sums[W + lane] + 1e-20)
        if done:
            converged[lane] = True
        active[lane] = (not done) and count < cap
"""

_CONSTANTS = """\
W = {lanes}
n = x{b}.size // W
zero = simd.splat(np.float32(0.0), W)
one = simd.splat(np.float32(1.0), W)
zero64 = simd.splat(0.0, W)
{setup}"""

# pass A (ascending): e = K y - data; a restarted lane's y is its x
_PASS_A = """
def pass_a_{variant}{tag}(x, y, data, e, restart_flag, coefficients, lag):
{constants}
    RESTART = simd.load(restart_flag, 0, W)
{pre}
    for step_t in range({start}, n):
{body}
"""

# pass B (descending): the adjoint recursion gives the gradient one sample at a time,
# and the proximal step of that sample follows right away
_PASS_B = """
def pass_b_{variant}{tag}(x, y, e, coefficients, lag, step, thresholds, momentum, running_flag, restart_flag, sums):
{constants}
    STEP = simd.splat(step, W)
    TH = simd.load(thresholds, 0, W)
    MU = simd.load(momentum, 0, W)
    RUN = simd.load(running_flag, 0, W)
    RESTART = simd.load(restart_flag, 0, W)
{sums_init}
{pre}
    for back in range({start}, n):
{body}
{sums_store}
"""

# pass B of one block and pass A of another (widths W_b, W_a) in one loop: the two are
# independent, so the core overlaps pass A's recursion latency with pass B's arithmetic
_PASS_BA = """
def pass_ba_{variant}{tag}(x_b, y_b, e_b, thresholds_b, momentum_b, running_flag_b, restart_flag_b, sums_b,
                     x_a, y_a, data_a, e_a, restart_flag_a, coefficients, lag, step):
{head_b}
{head_a}
{pre_b}
{pre_a}
    for step_t in range({start}, n_b):
        back = step_t
{body_a}
{body_b}
{sums_store}
"""
_HEAD_B = """\
STEP = simd.splat(step, W)
TH = simd.load(thresholds, 0, W)
MU = simd.load(momentum, 0, W)
RUN = simd.load(running_flag, 0, W)
RESTART = simd.load(restart_flag, 0, W)
"""
_HEAD_A = "RESTART = simd.load(restart_flag, 0, W)\n"

_SCRATCH = """\
    t_next{s} = np.zeros(W{s})
    momentum{s} = np.zeros(W{s}, np.float32)
    running_flag{s} = np.zeros(W{s}, np.float32)
    restart_flag{s} = np.zeros(W{s}, np.float32)
    sums{s} = np.zeros(3 * W{s})
"""

_SINGLE = """
def fista_lanes{tag}(x, y, data, e, coefficients, lag, step, thresholds, t, k, active, converged, restart,
                min_iterations, cap, tolerance_squared, max_steps):
    W = {lanes}
{scratch}
    for _ in range(max_steps):
        running, restarting = prepare{tag}(t, active, restart, t_next, momentum, running_flag, restart_flag)
        if running == 0:
            break
        if restarting:
            pass_a_restart{tag}(x, y, data, e, restart_flag, coefficients, lag)
        else:
            pass_a_plain{tag}(x, y, data, e, restart_flag, coefficients, lag)
        if restarting or running < W:
            pass_b_masked{tag}(x, y, e, coefficients, lag, step, thresholds, momentum, running_flag, restart_flag, sums)
        else:
            pass_b_plain{tag}(x, y, e, coefficients, lag, step, thresholds, momentum, running_flag, restart_flag, sums)
        finish{tag}(sums, t, t_next, k, active, converged, restart, min_iterations, cap, tolerance_squared)
"""

# Two blocks P and Q half an iteration apart: while P runs pass B of iteration k, Q runs
# pass A of its iteration k, then P's pass A of k + 1 runs with Q's pass B of k.  Each
# block goes through exactly the steps of the single-block kernel, in the same order.
_PAIR = """
def fista_pair{tag}(xP, yP, dataP, eP, thresholdsP, tP, kP, activeP, convergedP, restartP,
                xQ, yQ, dataQ, eQ, thresholdsQ, tQ, kQ, activeQ, convergedQ, restartQ,
                coefficients, lag, step, min_iterations, cap, tolerance_squared, max_steps):
    WP = {lanes_p}
    WQ = {lanes_q}
{scratch_p}
{scratch_q}
    runningP, restartingP = prepare{tag_p}(tP, activeP, restartP, t_nextP, momentumP, running_flagP, restart_flagP)
    if runningP > 0:
{a_p}
    for s in range(max_steps):
        runningQ, restartingQ = prepare{tag_q}(tQ, activeQ, restartQ, t_nextQ, momentumQ, running_flagQ, restart_flagQ)
        if runningP > 0 and runningQ > 0:
{ba_pq}
        elif runningP > 0:
{b_p}
        elif runningQ > 0:
{a_q}
        else:
            break
        if runningP > 0:
            finish{tag_p}(sumsP, tP, t_nextP, kP, activeP, convergedP, restartP, min_iterations, cap, tolerance_squared)
        if s + 1 < max_steps:
            runningP, restartingP = prepare{tag_p}(tP, activeP, restartP, t_nextP, momentumP, running_flagP, restart_flagP)
        else:
            runningP = 0
        if runningP > 0 and runningQ > 0:
{ba_qp}
        elif runningQ > 0:
{b_q}
        elif runningP > 0:
{a_p}
        if runningQ > 0:
            finish{tag_q}(sumsQ, tQ, t_nextQ, kQ, activeQ, convergedQ, restartQ, min_iterations, cap, tolerance_squared)
"""

#: the proximal step and extrapolation of one sample ``index`` whose ``gradient`` (float32
#: vector) is known, then its terms of the float64 sums (:data:`_SUM_TERMS`)
_PROXIMAL = """\
offset = index * W
old = simd.load(x, offset, W)
previous = {previous}
new = {new}
extrapolated = {extrapolated}
simd.store(x, offset, {new_x})
simd.store(y, offset, {new_y})
"""

#: the restart and convergence sums of lanes ``start … start + width − 1``: float64
#: vectors of at most 4 lanes (see :func:`._simd.widen_part`); each lane's sums run
#: sequentially over the samples whatever the grouping
_SUM_TERMS = """\
old64_{j} = simd.widen_part(old, {start}, {width})
new64_{j} = simd.widen_part(new, {start}, {width})
delta_{j} = simd.sub(new64_{j}, old64_{j})
change_{j} = simd.add(change_{j}, simd.mul(delta_{j}, delta_{j}))
size_{j} = simd.add(size_{j}, simd.mul(old64_{j}, old64_{j}))
signal_{j} = simd.add(signal_{j}, simd.mul(simd.sub(simd.widen_part(previous, {start}, {width}), new64_{j}), delta_{j}))
"""
_SUMS_INIT = "change_{j} = simd.splat(0.0, {width})\nsize_{j} = change_{j}\nsignal_{j} = change_{j}\n"
_SUMS_STORE = """\
simd.store(sums, {start}, change_{j})
simd.store(sums, W + {start}, size_{j})
simd.store(sums, 2 * W + {start}, signal_{j})
"""
#: lanes per float64 vector of the sums
SUM_GROUP = 4


def _sum_groups(lanes: int) -> list[dict]:
    return [dict(j=j, start=start, width=min(SUM_GROUP, lanes - start))
            for j, start in enumerate(range(0, lanes, SUM_GROUP))]


class _Operator:
    """One recursive operator's code: constants, and pass A / pass B as state set-up
    (``pre``) plus the body of a loop ``for step_t (pass A) / back (pass B) in
    range(start, n)``."""

    def __init__(self, setup: str, start: int, a_pre: str, a_body: str, b_pre: str, b_body: str) -> None:
        self.setup, self.start = setup, start
        self.a_pre, self.a_body, self.b_pre, self.b_body = a_pre, a_body, b_pre, b_body


# The AR(2) recursion of the reference, float32 (indeca.md §1.2):
# forward  m[t] = (g1 m[t-1] + g2 m[t-2]) + y[t-1] gain, m[0] = 0
# adjoint  a[t] = (e[t] gain + g1 a[t+1]) + g2 a[t+2], gradient[t-1] = a[t], gradient[n-1] = 0
_AR2 = _Operator(
    setup="""\
G1 = simd.splat(np.float32(coefficients[0]), W)
G2 = simd.splat(np.float32(coefficients[1]), W)
GAIN = simd.splat(np.float32(coefficients[2]), W)""",
    start=1,
    a_pre="a = zero\nb = zero",
    a_body="""\
source = {source_before}
value = simd.add(simd.add(simd.mul(G1, a), simd.mul(G2, b)), simd.mul(source, GAIN))
simd.store(e, step_t * W, simd.sub(value, simd.load(data, step_t * W, W)))
b = a
a = value""",
    b_pre="""\
a = zero
b = zero
gradient = zero
index = n - 1
{proximal}""",
    b_body="""\
index = n - 1 - back
gradient = simd.add(simd.add(simd.mul(simd.load(e, (index + 1) * W, W), GAIN), simd.mul(G1, a)), simd.mul(G2, b))
b = a
a = gradient
{proximal}""",
)

# FFT mode's truncated kernel h[j] = (d^j - r^j)/M, j < L (build_kernel), as four float64
# first-order recursions: sum_(j<L) d^j s[t-j] = R[t] - d^L R[t-L], and R[t-L] is the same
# recursion run on the input delayed by L (so no history is stored).
_BIEXP = _Operator(
    setup="""\
D = simd.splat(coefficients[0], W)
R = simd.splat(coefficients[1], W)
DL = simd.splat(coefficients[2], W)
RL = simd.splat(coefficients[3], W)
SCALE = simd.splat(coefficients[4], W)""",
    start=0,
    a_pre="r1 = zero64\nr2 = zero64\nl1 = zero64\nl2 = zero64",
    a_body="""\
s = simd.widen({source_now})
r1 = simd.add(simd.mul(D, r1), s)
r2 = simd.add(simd.mul(R, r2), s)
if step_t >= lag:
    lagged = simd.widen({source_lagged})
    l1 = simd.add(simd.mul(D, l1), lagged)
    l2 = simd.add(simd.mul(R, l2), lagged)
model = simd.mul(simd.sub(simd.sub(r1, simd.mul(DL, l1)), simd.sub(r2, simd.mul(RL, l2))), SCALE)
simd.store(e, step_t * W, simd.sub(simd.narrow(model), simd.load(data, step_t * W, W)))""",
    b_pre="q1 = zero64\nq2 = zero64\nu1 = zero64\nu2 = zero64",
    b_body="""\
index = n - 1 - back
residual = simd.widen(simd.load(e, index * W, W))
q1 = simd.add(simd.mul(D, q1), residual)
q2 = simd.add(simd.mul(R, q2), residual)
if back >= lag:
    lagged = simd.widen(simd.load(e, (index + lag) * W, W))
    u1 = simd.add(simd.mul(D, u1), lagged)
    u2 = simd.add(simd.mul(R, u2), lagged)
gradient = simd.narrow(simd.mul(simd.sub(simd.sub(q1, simd.mul(DL, u1)), simd.sub(q2, simd.mul(RL, u2))), SCALE))
{proximal}""",
)

_OPERATORS = {"ar2": _AR2, "biexp": _BIEXP}

#: names shared by both blocks of a fused loop (everything else gets the block's suffix)
_SHARED_NAMES = frozenset({"simd", "np", "range", "lag", "step", "step_t", "back", "coefficients"})


def _indent(code: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line if line else line for line in code.splitlines())


def _suffixed(code: str, suffix: str) -> str:
    """``code`` with every block-local name (not an attribute, not shared) renamed ``name + suffix``."""
    import keyword
    import re

    def rename(match: re.Match) -> str:
        name = match.group(0)
        return name if name in _SHARED_NAMES or keyword.iskeyword(name) else name + suffix

    return re.sub(r"(?<![\w.])[A-Za-z_]\w*", rename, code)


class _Code:
    """Generated source pieces of one operator, width and constraint."""

    def __init__(self, kind: str, lanes: int, box: bool) -> None:
        op = _OPERATORS[kind]
        self.op, self.lanes = op, lanes

        def source(offset: str, restarting: bool) -> str:
            y_at = f"simd.load(y, ({offset}) * W, W)"
            return f"simd.where(RESTART, simd.load(x, ({offset}) * W, W), {y_at})" if restarting else y_at

        self.a_body = {
            restarting: op.a_body.format(source_before=source("step_t - 1", restarting),
                                         source_now=source("step_t", restarting),
                                         source_lagged=source("step_t - lag", restarting))
            for restarting in (False, True)
        }

        # Numba's scalar min(max(v, 0), 1) and max(v, 0): the same compares and selects per lane
        def clip(expression: str) -> str:
            return f"simd.minimum(simd.maximum({expression}, zero), one)" if box else f"simd.maximum({expression}, zero)"

        plain = dict(previous="simd.load(y, offset, W)", new_x="new", new_y="extrapolated")
        masked = dict(previous="simd.where(RESTART, old, simd.load(y, offset, W))", new_x="simd.where(RUN, new, old)",
                      new_y="simd.where(RUN, extrapolated, previous)")
        step = "simd.sub(simd.sub(previous, simd.mul(STEP, gradient)), TH)"
        momentum = "simd.add(new, simd.mul(MU, simd.sub(new, old)))"
        groups = _sum_groups(lanes)
        self.sums_init = "".join(_SUMS_INIT.format(**group) for group in groups)
        self.sums_store = "".join(_SUMS_STORE.format(**group) for group in groups)
        self.b_pre, self.b_body = {}, {}
        for is_masked in (False, True):
            proximal = _PROXIMAL.format(new=clip(step), extrapolated=clip(momentum), **(masked if is_masked else plain))
            proximal = (proximal + "".join(_SUM_TERMS.format(**group) for group in groups)).rstrip("\n")
            self.b_pre[is_masked] = op.b_pre.format(proximal=proximal)
            self.b_body[is_masked] = op.b_body.format(proximal=proximal)
        self.constants = _CONSTANTS.format(lanes=lanes, setup=op.setup, b="")


def _block_tag(kind: str, lanes: int, box: bool) -> str:
    return f"_{kind}_{lanes}_{'box' if box else 'nonneg'}"


def _block_source(kind: str, lanes: int, box: bool) -> str:
    """Source of the single-block kernel ``fista_lanes<tag>`` for operator ``kind``,
    ``lanes`` cells and the box (``[0, 1]``) or non-negativity constraint, and of the
    functions it calls (also called by the pair kernels).

    The passes come in variants that skip the masks they do not need (every lane running
    and none restarted is the common case): pass A ``plain``/``restart``, pass B
    ``plain``/``masked``.
    """
    code, tag = _Code(kind, lanes, box), _block_tag(kind, lanes, box)
    constants = _indent(code.constants, 4)
    parts = [_CONTROL.format(tag=tag, lanes=lanes)]
    for restarting in (False, True):
        parts.append(_PASS_A.format(variant="restart" if restarting else "plain", tag=tag, constants=constants,
                                    pre=_indent(code.op.a_pre, 4), start=code.op.start,
                                    body=_indent(code.a_body[restarting], 8)))
    for is_masked in (False, True):
        parts.append(_PASS_B.format(variant="masked" if is_masked else "plain", tag=tag, constants=constants,
                                    pre=_indent(code.b_pre[is_masked], 4), start=code.op.start,
                                    body=_indent(code.b_body[is_masked], 8),
                                    sums_init=_indent(code.sums_init, 4), sums_store=_indent(code.sums_store, 4)))
    parts.append(_SINGLE.format(tag=tag, lanes=lanes, scratch=_SCRATCH.format(s="")))
    return "\n".join(parts)


def _pair_source(kind: str, lanes_p: int, lanes_q: int, box: bool) -> str:
    """Source of the pair kernel ``fista_pair<tag>`` (blocks of ``lanes_p`` and
    ``lanes_q`` cells) and of its fused pass B + pass A loops, in the four mask variants;
    the single-block functions of both widths must exist (:func:`_block_source`)."""
    tags = {"P": _block_tag(kind, lanes_p, box), "Q": _block_tag(kind, lanes_q, box)}
    codes = {"P": _Code(kind, lanes_p, box), "Q": _Code(kind, lanes_q, box)}
    pair_tag = f"_{kind}_{lanes_p}_{lanes_q}_{'box' if box else 'nonneg'}"
    parts = []
    for b, a in (("P", "Q"), ("Q", "P")):
        fused_tag = f"{pair_tag}_{b}{a}"
        code_b, code_a = codes[b], codes[a]
        for is_masked in (False, True):
            for restarting in (False, True):
                parts.append(_PASS_BA.format(
                    variant=f"{'masked' if is_masked else 'plain'}_{'restart' if restarting else 'plain'}",
                    tag=fused_tag, start=code_b.op.start,
                    head_b=_indent(_suffixed(code_b.constants + "\n" + _HEAD_B + code_b.sums_init, "_b"), 4),
                    head_a=_indent(_suffixed(code_a.constants + "\n" + _HEAD_A, "_a"), 4),
                    pre_b=_indent(_suffixed(code_b.b_pre[is_masked], "_b"), 4),
                    pre_a=_indent(_suffixed(code_a.op.a_pre, "_a"), 4),
                    body_a=_indent(_suffixed(code_a.a_body[restarting], "_a"), 8),
                    body_b=_indent(_suffixed(code_b.b_body[is_masked], "_b"), 8),
                    sums_store=_indent(_suffixed(code_b.sums_store, "_b"), 4),
                ))

    def call_a(block: str) -> str:
        args = f"x{block}, y{block}, data{block}, e{block}, restart_flag{block}, coefficients, lag"
        tag = tags[block]
        return _indent(f"if restarting{block}:\n    pass_a_restart{tag}({args})\nelse:\n    pass_a_plain{tag}({args})", 12)

    def call_b(block: str) -> str:
        args = (f"x{block}, y{block}, e{block}, coefficients, lag, step, thresholds{block}, momentum{block}, "
                f"running_flag{block}, restart_flag{block}, sums{block}")
        tag = tags[block]
        return _indent(f"if restarting{block} or running{block} < W{block}:\n    pass_b_masked{tag}({args})\n"
                       f"else:\n    pass_b_plain{tag}({args})", 12)

    def call_ba(b: str, a: str) -> str:
        args = (f"x{b}, y{b}, e{b}, thresholds{b}, momentum{b}, running_flag{b}, restart_flag{b}, sums{b}, "
                f"x{a}, y{a}, data{a}, e{a}, restart_flag{a}, coefficients, lag, step")
        fused_tag = f"{pair_tag}_{b}{a}"

        def pick(masks: str) -> str:
            return (f"if restarting{a}:\n    pass_ba_{masks}_restart{fused_tag}({args})\n"
                    f"else:\n    pass_ba_{masks}_plain{fused_tag}({args})")

        return _indent(f"if restarting{b} or running{b} < W{b}:\n{_indent(pick('masked'), 4)}\n"
                       f"else:\n{_indent(pick('plain'), 4)}", 12)

    parts.append(_PAIR.format(
        tag=pair_tag, tag_p=tags["P"], tag_q=tags["Q"], lanes_p=lanes_p, lanes_q=lanes_q,
        scratch_p=_SCRATCH.format(s="P"), scratch_q=_SCRATCH.format(s="Q"),
        a_p=call_a("P"), a_q=call_a("Q"), b_p=call_b("P"), b_q=call_b("Q"), ba_pq=call_ba("P", "Q"),
        ba_qp=call_ba("Q", "P"),
    ))
    return "\n".join(parts)


#: every generated function, compiled (a function calls others by their global names)
_namespace: dict[str, Any] = {}


def _compile(source: str) -> None:
    """Define the functions of ``source`` in :data:`_namespace`, compiled with Numba."""
    from numba import njit

    from calab.backends.cpu import _simd

    if not _namespace:
        _namespace.update(np=np, simd=_simd, __name__=__name__)
    defined: dict[str, Any] = {}
    # compiled with this file's name and a name per variant, so Numba's on-disk cache can
    # hold every variant
    exec(compile(source, __file__, "exec"), _namespace, defined)
    for name, function in defined.items():
        _namespace[name] = njit(nogil=True, cache=True)(function)


def _kernel(kind: str, lanes: int, box: bool) -> Any:
    """The compiled single-block kernel for ``kind``, ``lanes`` cells and the constraint."""
    name = f"fista_lanes{_block_tag(kind, lanes, box)}"
    if name not in _namespace:
        _compile(_block_source(kind, lanes, box))
    return _namespace[name]


def _pair_kernel(kind: str, lanes_p: int, lanes_q: int, box: bool) -> Any:
    """The compiled pair kernel for blocks of ``lanes_p`` and ``lanes_q`` cells."""
    name = f"fista_pair_{kind}_{lanes_p}_{lanes_q}_{'box' if box else 'nonneg'}"
    if name not in _namespace:
        _kernel(kind, lanes_p, box)
        _kernel(kind, lanes_q, box)
        _compile(_pair_source(kind, lanes_p, lanes_q, box))
    return _namespace[name]


def lanes_apply(plan: Any, valid: Any) -> bool:
    """Whether a solve can run in lane blocks: dense rows, no block mean, and an operator
    with a recursion — the AR(2) recursion itself (not by FFT, not segmented), or FFT
    mode's difference of two exponentials (``plan.exponentials``)."""
    if valid is not None or plan.upsample != 1 or plan.n_timepoints == 0 or plan.segments is not None:
        return False
    if plan.conv_mode == "banded":
        return plan.kernel_spectrum is None
    return plan.exponentials is not None


def lane_operator(plan: Any) -> tuple[str, np.ndarray, int]:
    """``(kind, coefficients, lag)`` of the kernel arguments for ``plan``."""
    if plan.conv_mode == "banded":
        return "ar2", np.array([float(v) for v in plan.ar2], dtype=np.float64), 0
    decay, rise, decay_lag, rise_lag, scale, length = plan.exponentials
    return "biexp", np.array([decay, rise, decay_lag, rise_lag, scale], dtype=np.float64), int(length)


def lane_blocks(n_cells: int, workers: int, size: int = MAX_LANES) -> list[range]:
    """Balanced blocks of at most ``size`` cells, a multiple of ``workers`` of them."""
    if n_cells == 0:
        return []
    count = workers * max(1, -(-n_cells // (workers * size)))
    count = min(count, n_cells)
    edges = [n_cells * i // count for i in range(count + 1)]
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def padded_lanes(count: int) -> int:
    """Lanes of the kernel that iterates ``count`` cells: the next power of two up to
    :data:`MAX_LANES` (beyond it, ``count`` itself).

    LLVM splits a vector of 3, 5, 6 or 7 lanes into pieces with extra shuffles, so such a
    step costs up to 1.7x an 8-lane step (measured at 90,000 samples, AVX-512); padding
    lanes are inactive and change no other lane's arithmetic.
    """
    if count <= 1 or count > MAX_LANES:
        return max(count, 1)
    return min(1 << (count - 1).bit_length(), MAX_LANES)


def _time_major(rows: np.ndarray, lanes: int) -> np.ndarray:
    """``(B, n)`` rows → flat ``(n, lanes)`` time-major float32, zero-padded lanes."""
    count, n = rows.shape
    out = np.zeros((n, lanes), dtype=np.float32)
    out[:, :count] = rows.T
    return out.reshape(-1)


def _kernel_arguments(plan: Any) -> tuple[str, np.ndarray, int, np.float32, bool]:
    kind, coefficients, lag = lane_operator(plan)
    return kind, coefficients, lag, np.float32(plan.step32), plan.constraint == "box01"


def _stopping_arguments(plan: Any) -> tuple[int, int, float, int]:
    return int(plan.min_iterations), int(plan.max_iterations), float(plan.tolerance_squared), STEPS_PER_CALL


class LaneBatch(FistaBatch):
    """A block of up to :data:`MAX_LANES` cells iterated by the lane kernel.

    Rows of the batch are lanes, padded to :func:`padded_lanes` with inactive lanes.
    Compaction re-packs the running cells into a narrower
    block once at most half the lanes are still running.
    """

    def __init__(self, plan: Any, work: np.ndarray, threshold: np.ndarray, x0: np.ndarray | None) -> None:
        self.plan = plan
        rows, n = work.shape
        self.n = n
        self._pack(
            np.asarray(work, dtype=np.float32),
            np.zeros((rows, n), np.float32) if x0 is None else np.asarray(x0, dtype=np.float32),
            None,
            np.asarray(threshold, dtype=np.float32),
            np.ones(rows),
            np.zeros(rows, np.int64),
            np.full(rows, plan.max_iterations > 0),
            np.zeros(rows, bool),
            np.zeros(rows, bool),
        )

    @classmethod
    def from_state(cls, plan: Any, n: int, *state: np.ndarray) -> LaneBatch:
        """A block holding cells mid-solve: ``state`` is the arguments of :meth:`_pack`."""
        batch = cls.__new__(cls)
        batch.plan = plan
        batch.n = n
        batch._pack(*state)
        return batch

    def _pack(self, data, x, y, threshold, t, k, active, converged, restart) -> None:
        count = data.shape[0]
        lanes = padded_lanes(count)
        self.lanes = lanes
        self.data = _time_major(data, lanes)
        self.x = _time_major(x, lanes)
        self.y = self.x.copy() if y is None else _time_major(y, lanes)
        self.e = np.empty_like(self.x)
        self.threshold = np.zeros(lanes, np.float32)
        self.threshold[:count] = threshold
        self.t = np.ones(lanes)
        self.t[:count] = t
        self.k = np.zeros(lanes, np.int64)
        self.k[:count] = k
        self.active_lanes = np.zeros(lanes, bool)
        self.active_lanes[:count] = active
        self.converged = np.zeros(lanes, bool)
        self.converged[:count] = converged
        self.restart = np.zeros(lanes, bool)
        self.restart[:count] = restart

    def kernel_state(self) -> tuple[np.ndarray, ...]:
        """The block's arrays in the order the kernels take them."""
        return (self.x, self.y, self.data, self.e, self.threshold, self.t, self.k, self.active_lanes,
                self.converged, self.restart)  # fmt: skip

    @property
    def rows(self) -> int:
        return self.lanes

    def advance(self) -> None:
        kind, coefficients, lag, step, box = _kernel_arguments(self.plan)
        x, y, data, e, threshold, t, k, active, converged, restart = self.kernel_state()
        _kernel(kind, self.lanes, box)(
            x, y, data, e, coefficients, lag, step, threshold, t, k, active, converged, restart,
            *_stopping_arguments(self.plan),
        )  # fmt: skip

    def active(self) -> np.ndarray:
        return self.active_lanes.copy()

    def compact_now(self, running: int) -> bool:
        return 2 * running <= self.lanes

    def _rows(self, flat: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(flat.reshape(self.n, self.lanes)[:, index].T)

    def harvest(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._rows(self.x, index), self.k[index].copy(), self.converged[index].copy()

    def state(self, index: np.ndarray) -> tuple[np.ndarray, ...]:
        """Lanes ``index`` as the arguments of :meth:`_pack` (rows of data, x, y; per-lane values)."""
        return (
            self._rows(self.data, index), self._rows(self.x, index), self._rows(self.y, index), self.threshold[index],
            self.t[index], self.k[index], self.active_lanes[index], self.converged[index], self.restart[index],
        )  # fmt: skip

    def compact(self, keep: np.ndarray) -> None:
        self._pack(*self.state(keep))


class LanePair(FistaBatch):
    """9-16 cells in two lane blocks, iterated together by the pair kernel.

    A block's pass A is a recursion whose per-sample latency leaves most of the core's
    arithmetic units idle, and its pass B is arithmetic-bound; the pair kernel runs one
    block's pass B in the same loop as the other block's pass A (each block still takes
    its own steps in its own order, so its results are those of a single block).  Block P
    holds the first :data:`MAX_LANES` cells, block Q the rest (padded to
    :func:`padded_lanes`).  Rows ``0 … cells − 1`` are the cells in input order, padding
    lanes follow.  Once at most :data:`MAX_LANES` cells are running they are re-packed
    into one :class:`LaneBatch`.
    """

    def __init__(self, plan: Any, work: np.ndarray, threshold: np.ndarray, x0: np.ndarray | None) -> None:
        rows, n = work.shape
        if not MAX_LANES < rows <= 2 * MAX_LANES:
            raise ValueError(f"a lane pair holds {MAX_LANES + 1}-{2 * MAX_LANES} cells, not {rows}")
        self.plan, self.n = plan, n
        halves = (slice(0, MAX_LANES), slice(MAX_LANES, rows))
        self.blocks = tuple(
            LaneBatch(plan, work[half], threshold[half], None if x0 is None else x0[half]) for half in halves
        )
        first, second = self.blocks
        # lane of row i among the lanes of P followed by those of Q
        self._lane_of_row = np.concatenate(
            [np.arange(rows), first.lanes + np.arange(rows - MAX_LANES, second.lanes)]
        )
        self.merged: LaneBatch | None = None

    @property
    def rows(self) -> int:
        return sum(block.lanes for block in self.blocks) if self.merged is None else self.merged.rows

    def advance(self) -> None:
        if self.merged is not None:
            self.merged.advance()
            return
        kind, coefficients, lag, step, box = _kernel_arguments(self.plan)
        first, second = self.blocks
        _pair_kernel(kind, first.lanes, second.lanes, box)(
            *first.kernel_state(), *second.kernel_state(), coefficients, lag, step, *_stopping_arguments(self.plan)
        )

    def _lanes(self, name: str) -> np.ndarray:
        return np.concatenate([getattr(block, name) for block in self.blocks])

    def active(self) -> np.ndarray:
        if self.merged is not None:
            return self.merged.active()
        return self._lanes("active_lanes")[self._lane_of_row]

    def compact_now(self, running: int) -> bool:
        return self.merged.compact_now(running) if self.merged is not None else running <= MAX_LANES

    def _gather(self, name: str, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` of the time-major array ``name`` of the blocks, as ``(len(index), n)``."""
        lanes = self._lane_of_row[index]
        first = self.blocks[0]
        out = np.empty((index.size, self.n), np.float32)
        in_first = lanes < first.lanes
        for block, mine, lane in ((first, in_first, lanes), (self.blocks[1], ~in_first, lanes - first.lanes)):
            if mine.any():
                out[mine] = block._rows(getattr(block, name), lane[mine])
        return out

    def harvest(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.merged is not None:
            return self.merged.harvest(index)
        lanes = self._lane_of_row[index]
        return self._gather("x", index), self._lanes("k")[lanes], self._lanes("converged")[lanes]

    def compact(self, keep: np.ndarray) -> None:
        if self.merged is not None:
            self.merged.compact(keep)
            return
        lanes = self._lane_of_row[keep]
        state = [self._gather(name, keep) for name in ("data", "x", "y")]
        state += [self._lanes(name)[lanes] for name in ("threshold", "t", "k", "active_lanes", "converged", "restart")]
        self.merged = LaneBatch.from_state(self.plan, self.n, *state)
        self.blocks = ()
