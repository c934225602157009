// calab CUDA kernels: banded AR(2) operator and banded-mode FISTA (time-major layout).
//
// Arrays are (n, B) row-major ("time-major"): element (t, b) is at t * B + b, so that one
// thread per cell walks down its column while the threads of a warp read 32 neighbouring
// cells of the same time step (coalesced).  Compiled by NVRTC with --fmad=false: each
// float32 operation is rounded separately, in the reference's order (spec numerics.md
// §8.2), so the sequential kernels are bit-for-bit the Numba kernels of the NumPy backend.
// The NumPy transliterations are in calab/backends/cuda/reference.py.
//
// Recursions (g1, g2, gain = f32(1/peak)):
//   forward  o_0 = 0,  o_t = (g1 o_{t-1} + g2 o_{t-2}) + s_{t-1} gain
//   adjoint  a_n = a_{n+1} = 0,  a_t = (e_t gain + g1 a_{t+1}) + g2 a_{t+2},
//            out_{t-1} = a_t (t >= 1),  out_{n-1} = 0
//
// Two ways to run them:
//   * sequential: one thread per cell for the whole trace (many cells);
//   * chunked: the time axis is cut into C chunks of L samples; every (chunk, cell) runs
//     the recursion from a zero state (local pass), a per-cell carry pass propagates the
//     two-sample state across chunk boundaries, and a fix-up pass adds the homogeneous
//     response  p_j s1 + q_j s2  (table pq, (L + 1, 2), row 0 = (1, 0) for j = -1,
//     row j + 1 = (p_j, q_j)).  Used when cells are few, to fill the GPU.
//
// No #include (NVRTC without host headers).

// Samples loaded ahead per thread by the sequential kernels: with one thread per cell a
// GPU holds few warps (10,000 cells are ~2.4 warps per H200 multiprocessor), so memory
// latency is hidden by loading a group of samples of every input before the recursion
// consumes them.  Override with -DCALAB_UNROLL=n (env CALAB_CUDA_UNROLL).
#ifndef CALAB_UNROLL
#define CALAB_UNROLL 16
#endif

__device__ __forceinline__ float calab_max0(float v) { return (v >= 0.0f) ? v : 0.0f; }
__device__ __forceinline__ float calab_min1(float v) { return (v <= 1.0f) ? v : 1.0f; }

// One FISTA element update (shared by the banded kernels): from the old x and the y at
// which the gradient g was taken, the new x and extrapolated y, and the float64 terms.
__device__ __forceinline__ void calab_prox_values(
    const float old, const float here, const float g, const float step, const float shrink,
    const float momentum, const int box, float& nw, float& ahead,
    double& change, double& size, double& signal)
{
    float value = here - step * g;
    value = value - shrink;
    nw = calab_max0(value);
    if (box) nw = calab_min1(nw);
    ahead = nw + momentum * (nw - old);
    ahead = calab_max0(ahead);
    if (box) ahead = calab_min1(ahead);
    const double delta = (double)nw - (double)old;
    change += delta * delta;
    size += (double)old * (double)old;
    signal += ((double)here - (double)nw) * delta;
}

__device__ __forceinline__ void calab_prox_element(
    float* __restrict__ x, float* __restrict__ y, const long long at, const float g,
    const float step, const float shrink, const float momentum, const int box,
    double& change, double& size, double& signal)
{
    float nw, ahead;
    calab_prox_values(x[at], y[at], g, step, shrink, momentum, box, nw, ahead, change, size, signal);
    x[at] = nw;
    y[at] = ahead;
}

__device__ __forceinline__ void calab_finish_cell(
    const long long b, const double t_next, const double change, const double size,
    const double signal, double* __restrict__ tmom, int* __restrict__ iters,
    unsigned char* __restrict__ active, unsigned char* __restrict__ converged,
    const long long cap, const double tol2, const int min_iters, bool& restart)
{
    // Stopping rule as data: convergence is tested once k exceeds min_iters (5 in the
    // reference's CaTune and InDeCa rules), with tolerance tol2 = tol*tol.
    const int k_new = iters[b] + 1;
    restart = (k_new > 1) && (signal > 0.0);
    const bool done = (k_new > min_iters) && (change < tol2 * (size + 1e-20));
    const bool conv = converged[b] || done;
    tmom[b] = restart ? 1.0 : t_next;
    iters[b] = k_new;
    converged[b] = conv;
    active[b] = (!conv) && ((long long)k_new < cap);
}

// ---------------------------------------------------------------- sequential kernels
// Forward recursion of every cell; with has_work it writes the masked residual
// e_t = f32(o_t - work_t) * valid_t instead of o_t (the banded gradient's first half).
extern "C" __global__ void ar2_forward_tm(
    const float* __restrict__ src, float* __restrict__ out,
    const float* __restrict__ work, const int has_work,
    const float* __restrict__ valid, const int has_valid,
    const unsigned char* __restrict__ active, const int has_active,
    const int n, const long long B, const float g1, const float g2, const float gain)
{
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    if (has_active && !active[b]) return;
    float last1 = 0.0f, last2 = 0.0f, previous = 0.0f;  // o_{t-1}, o_{t-2}, s_{t-1}
    for (int t0 = 0; t0 < n; t0 += CALAB_UNROLL) {
        float s[CALAB_UNROLL], w[CALAB_UNROLL], v[CALAB_UNROLL];
#pragma unroll
        for (int u = 0; u < CALAB_UNROLL; ++u) {  // independent loads first (latency)
            const int t = t0 + u;
            s[u] = 0.0f; w[u] = 0.0f; v[u] = 1.0f;
            if (t < n) {
                const long long at = (long long)t * B + b;
                s[u] = src[at];
                if (has_work) w[u] = work[at];
                if (has_valid) v[u] = valid[at];
            }
        }
#pragma unroll
        for (int u = 0; u < CALAB_UNROLL; ++u) {
            const int t = t0 + u;
            if (t < n) {
                float o = 0.0f;
                if (t > 0) o = (g1 * last1 + g2 * last2) + previous * gain;
                last2 = last1;
                last1 = o;
                previous = s[u];
                float value = o;
                if (has_work) {
                    value = value - w[u];
                    if (has_valid) value = value * v[u];
                }
                out[(long long)t * B + b] = value;
            }
        }
    }
}

// Adjoint recursion of every cell (plain: out = K^T src).
extern "C" __global__ void ar2_adjoint_tm(
    const float* __restrict__ src, float* __restrict__ out,
    const int n, const long long B, const float g1, const float g2, const float gain)
{
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B || n <= 0) return;
    float next1 = 0.0f, next2 = 0.0f;
    out[(long long)(n - 1) * B + b] = 0.0f;
    for (int top = n - 1; top >= 1; top -= CALAB_UNROLL) {
        float s[CALAB_UNROLL];
#pragma unroll
        for (int u = 0; u < CALAB_UNROLL; ++u) {
            const int t = top - u;
            s[u] = (t >= 1) ? src[(long long)t * B + b] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < CALAB_UNROLL; ++u) {
            const int t = top - u;
            if (t >= 1) {
                const float a = (s[u] * gain + g1 * next1) + g2 * next2;
                next2 = next1;
                next1 = a;
                out[(long long)(t - 1) * B + b] = a;
            }
        }
    }
}

// Adjoint recursion fused with the whole FISTA update of the cell: the gradient element
// g_i = a_{i+1} is produced backwards in time and consumed at once by the proximal step;
// the float64 accumulators, restart and convergence test follow at the end of the column.
extern "C" __global__ void ar2_adjoint_update_tm(
    const float* __restrict__ e, float* __restrict__ x, float* __restrict__ y,
    double* __restrict__ tmom, int* __restrict__ iters,
    unsigned char* __restrict__ active, unsigned char* __restrict__ converged,
    const float* __restrict__ threshold,
    const int n, const long long B, const float g1, const float g2, const float gain,
    const float step, const int box, const long long cap, const double tol2, const int min_iters)
{
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    if (!active[b]) return;
    const double t_old = tmom[b];
    const double t_next = (1.0 + sqrt(1.0 + 4.0 * t_old * t_old)) / 2.0;
    const float momentum = (float)((t_old - 1.0) / t_next);
    const float shrink = threshold[b];
    double change = 0.0, size = 0.0, signal = 0.0;
    float next1 = 0.0f, next2 = 0.0f;  // a_{i+2}, a_{i+3}
    for (int top = n - 1; top >= 0; top -= CALAB_UNROLL) {
        float s[CALAB_UNROLL], xs[CALAB_UNROLL], ys[CALAB_UNROLL];
#pragma unroll
        for (int u = 0; u < CALAB_UNROLL; ++u) {  // e_{i+1}, x_i, y_i of the group, loaded first
            const int i = top - u;
            s[u] = 0.0f; xs[u] = 0.0f; ys[u] = 0.0f;
            if (i >= 0) {
                const long long at = (long long)i * B + b;
                if (i + 1 < n) s[u] = e[at + B];
                xs[u] = x[at];
                ys[u] = y[at];
            }
        }
#pragma unroll
        for (int u = 0; u < CALAB_UNROLL; ++u) {
            const int i = top - u;
            if (i >= 0) {
                float g = 0.0f;
                if (i + 1 < n) {
                    const float a = (s[u] * gain + g1 * next1) + g2 * next2;
                    next2 = next1;
                    next1 = a;
                    g = a;
                }
                float nw, ahead;
                calab_prox_values(xs[u], ys[u], g, step, shrink, momentum, box, nw, ahead,
                                  change, size, signal);
                const long long at = (long long)i * B + b;
                x[at] = nw;
                y[at] = ahead;
            }
        }
    }
    bool restart;
    calab_finish_cell(b, t_next, change, size, signal, tmom, iters, active, converged, cap, tol2, min_iters, restart);
    if (restart) {
        for (int i = 0; i < n; ++i) y[(long long)i * B + b] = x[(long long)i * B + b];
    }
}

// ---------------------------------------------------------------- chunked kernels
// Thread (c, b) = c * B + b.  ends/starts: (C, B, 2) float32; partials: (C, B, 3) float64.

extern "C" __global__ void ar2_chunk_forward_local(
    const float* __restrict__ src, float* __restrict__ z, float* __restrict__ ends,
    const unsigned char* __restrict__ active, const int has_active,
    const int n, const long long B, const int L, const int C,
    const float g1, const float g2, const float gain)
{
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (long long)C * B) return;
    const int c = (int)(id / B);
    const long long b = id - (long long)c * B;
    if (has_active && !active[b]) return;
    const int t0 = c * L;
    const int t1 = min(t0 + L, n);
    float last1 = 0.0f, last2 = 0.0f;
    for (int t = t0; t < t1; ++t) {
        float o = 0.0f;
        if (t > 0) o = (g1 * last1 + g2 * last2) + src[(long long)(t - 1) * B + b] * gain;
        z[(long long)t * B + b] = o;
        last2 = last1;
        last1 = o;
    }
    ends[id * 2] = last1;
    ends[id * 2 + 1] = last2;
}

extern "C" __global__ void ar2_chunk_carry_forward(
    const float* __restrict__ ends, float* __restrict__ starts, const float* __restrict__ pq,
    const unsigned char* __restrict__ active, const int has_active,
    const long long B, const int L, const int C)
{
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    if (has_active && !active[b]) return;
    float s1 = 0.0f, s2 = 0.0f;
    starts[b * 2] = 0.0f;
    starts[b * 2 + 1] = 0.0f;
    for (int c = 0; c + 1 < C; ++c) {  // every chunk but the last has length L
        const long long at = ((long long)c * B + b) * 2;
        const float e1 = ends[at] + (pq[2 * L] * s1 + pq[2 * L + 1] * s2);
        const float e2 = ends[at + 1] + (pq[2 * (L - 1)] * s1 + pq[2 * (L - 1) + 1] * s2);
        s1 = e1;
        s2 = e2;
        const long long next = ((long long)(c + 1) * B + b) * 2;
        starts[next] = s1;
        starts[next + 1] = s2;
    }
}

// Element-wise fix-up of the forward pass, optionally fused with the residual:
// o = z + (p_j s1 + q_j s2); out = has_work ? f32(o - work) * valid : o.  out may alias z.
extern "C" __global__ void ar2_chunk_forward_fix(
    const float* z, float* out, const float* __restrict__ starts,
    const float* __restrict__ pq,
    const float* __restrict__ work, const int has_work,
    const float* __restrict__ valid, const int has_valid,
    const unsigned char* __restrict__ active, const int has_active,
    const int n, const long long B, const int L)
{
    const long long total = (long long)n * B;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const int t = (int)(idx / B);
        const long long b = idx - (long long)t * B;
        if (has_active && !active[b]) continue;
        const int c = t / L;
        const int j = t - c * L;
        const long long at = ((long long)c * B + b) * 2;
        float value = z[idx] + (pq[2 * (j + 1)] * starts[at] + pq[2 * (j + 1) + 1] * starts[at + 1]);
        if (has_work) {
            value = value - work[idx];
            if (has_valid) value = value * valid[idx];
        }
        out[idx] = value;
    }
}

extern "C" __global__ void ar2_chunk_adjoint_local(
    const float* __restrict__ src, float* __restrict__ z, float* __restrict__ ends,
    const unsigned char* __restrict__ active, const int has_active,
    const int n, const long long B, const int L, const int C,
    const float g1, const float g2, const float gain)
{
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (long long)C * B) return;
    const int c = (int)(id / B);
    const long long b = id - (long long)c * B;
    if (has_active && !active[b]) return;
    const int t0 = c * L;
    const int t1 = min(t0 + L, n);
    float next1 = 0.0f, next2 = 0.0f;
    for (int t = t1 - 1; t >= t0; --t) {
        const float a = (src[(long long)t * B + b] * gain + g1 * next1) + g2 * next2;
        z[(long long)t * B + b] = a;
        next2 = next1;
        next1 = a;
    }
    ends[id * 2] = next1;      // local a at the chunk's first sample
    ends[id * 2 + 1] = next2;  // ... and at the second (0 for a one-sample chunk)
}

extern "C" __global__ void ar2_chunk_carry_adjoint(
    const float* __restrict__ ends, float* __restrict__ starts, const float* __restrict__ pq,
    const unsigned char* __restrict__ active, const int has_active,
    const int n, const long long B, const int L, const int C)
{
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    if (has_active && !active[b]) return;
    float s1 = 0.0f, s2 = 0.0f;  // a_{top+1}, a_{top+2} of the chunk being processed
    const long long last = ((long long)(C - 1) * B + b) * 2;
    starts[last] = 0.0f;
    starts[last + 1] = 0.0f;
    for (int c = C - 1; c >= 1; --c) {
        const int length = min(L, n - c * L);
        const long long at = ((long long)c * B + b) * 2;
        const float first = ends[at] + (pq[2 * length] * s1 + pq[2 * length + 1] * s2);
        const float second = ends[at + 1] + (pq[2 * (length - 1)] * s1 + pq[2 * (length - 1) + 1] * s2);
        s1 = first;
        s2 = second;
        const long long prev = ((long long)(c - 1) * B + b) * 2;
        starts[prev] = s1;
        starts[prev + 1] = s2;
    }
}

// True adjoint state a_tt (0 <= tt < n) from the local pass and the carried states.
__device__ __forceinline__ float calab_adjoint_state(
    const float* __restrict__ z, const float* __restrict__ starts, const float* __restrict__ pq,
    const int tt, const long long b, const int n, const long long B, const int L)
{
    const int c = tt / L;
    const int top = min(c * L + L, n) - 1;
    const int j = top - tt;
    const long long at = ((long long)c * B + b) * 2;
    return z[(long long)tt * B + b] + (pq[2 * (j + 1)] * starts[at] + pq[2 * (j + 1) + 1] * starts[at + 1]);
}

// Element-wise fix-up of the adjoint pass: out_t = a_{t+1}, out_{n-1} = 0.  out != z.
extern "C" __global__ void ar2_chunk_adjoint_fix(
    const float* __restrict__ z, float* __restrict__ out, const float* __restrict__ starts,
    const float* __restrict__ pq, const int n, const long long B, const int L)
{
    const long long total = (long long)n * B;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const int t = (int)(idx / B);
        const long long b = idx - (long long)t * B;
        out[idx] = (t + 1 < n) ? calab_adjoint_state(z, starts, pq, t + 1, b, n, B, L) : 0.0f;
    }
}

// Fix-up of the adjoint pass fused with the proximal step of every element of chunk c of
// cell b (backwards in time); writes the chunk's float64 partial sums of D, X, P.
extern "C" __global__ void ar2_chunk_adjoint_update(
    const float* __restrict__ z, const float* __restrict__ starts, const float* __restrict__ pq,
    float* __restrict__ x, float* __restrict__ y, const double* __restrict__ tmom,
    const unsigned char* __restrict__ active, const float* __restrict__ threshold,
    double* __restrict__ partials,
    const int n, const long long B, const int L, const int C,
    const float step, const int box)
{
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (long long)C * B) return;
    const int c = (int)(id / B);
    const long long b = id - (long long)c * B;
    if (!active[b]) return;
    const double t_old = tmom[b];
    const double t_next = (1.0 + sqrt(1.0 + 4.0 * t_old * t_old)) / 2.0;
    const float momentum = (float)((t_old - 1.0) / t_next);
    const float shrink = threshold[b];
    const int t0 = c * L;
    const int t1 = min(t0 + L, n);
    double change = 0.0, size = 0.0, signal = 0.0;
    for (int i = t1 - 1; i >= t0; --i) {
        const float g = (i + 1 < n) ? calab_adjoint_state(z, starts, pq, i + 1, b, n, B, L) : 0.0f;
        calab_prox_element(x, y, (long long)i * B + b, g, step, shrink, momentum, box,
                           change, size, signal);
    }
    partials[id * 3] = change;
    partials[id * 3 + 1] = size;
    partials[id * 3 + 2] = signal;
}

// Per-cell decision after a chunked update: sums the C partials (chunk order), restart,
// convergence, momentum, iteration count; restart[b] tells fista_restart_tm to copy.
extern "C" __global__ void fista_decide(
    const double* __restrict__ partials, const int C, const long long B,
    double* __restrict__ tmom, int* __restrict__ iters,
    unsigned char* __restrict__ active, unsigned char* __restrict__ converged,
    unsigned char* __restrict__ restart_flags, const long long cap, const double tol2, const int min_iters)
{
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    restart_flags[b] = 0;
    if (!active[b]) return;
    double change = 0.0, size = 0.0, signal = 0.0;
    for (int c = 0; c < C; ++c) {
        const long long at = ((long long)c * B + b) * 3;
        change += partials[at];
        size += partials[at + 1];
        signal += partials[at + 2];
    }
    const double t_old = tmom[b];
    const double t_next = (1.0 + sqrt(1.0 + 4.0 * t_old * t_old)) / 2.0;
    bool restart;
    calab_finish_cell(b, t_next, change, size, signal, tmom, iters, active, converged, cap, tol2, min_iters, restart);
    restart_flags[b] = restart ? 1 : 0;
}

extern "C" __global__ void fista_restart_tm(
    const float* __restrict__ x, float* __restrict__ y,
    const unsigned char* __restrict__ restart_flags, const int n, const long long B)
{
    const long long total = (long long)n * B;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long b = idx % B;
        if (restart_flags[b]) y[idx] = x[idx];
    }
}
