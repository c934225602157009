// calab CUDA kernels: FFT-mode FISTA (cell-major layout, one block per cell).
//
// Compiled at run time by NVRTC through cupy.RawModule (options: --fmad=false so that
// every float32 operation is rounded separately, in the order of the NumPy backend).
// The NumPy transliteration of every kernel below is in calab/backends/cuda/reference.py
// and is tested against the NumPy backend in CPU CI.
//
// Layout: a batch of B cells; x, data: (B, n) row-major; ypad, full: (B, ld) row-major
// with ld = FFT length P >= n; y lives in ypad[:, :n] and ypad[:, n:] stays zero so that
// the batched real FFT reads ypad directly (no padding copy per iteration).
//
// No #include: the file must compile with NVRTC (no host headers) and with nvcc.

#define CALAB_FULL_MASK 0xffffffffu

__device__ __forceinline__ float calab_max0(float v) {
    // numpy.maximum(v, 0): keeps -0.0 (v >= 0 is true for -0.0)
    return (v >= 0.0f) ? v : 0.0f;
}

__device__ __forceinline__ float calab_min1(float v) {
    // numpy.minimum(v, 1)
    return (v <= 1.0f) ? v : 1.0f;
}

__device__ __forceinline__ double calab_warp_sum(double v) {
    // Tree order reproduced by reference.warp_tree_sum: lane l += lane l + offset.
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_down_sync(CALAB_FULL_MASK, v, offset);
    }
    return v;
}

// Sums three doubles over the block (blockDim.x a multiple of 32, <= 1024); the totals
// are returned to every thread.  Deterministic: fixed tree order.
__device__ __forceinline__ void calab_block_sum3(double& a, double& b, double& c) {
    __shared__ double partial[3][32];
    __shared__ double total[3];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    a = calab_warp_sum(a);
    b = calab_warp_sum(b);
    c = calab_warp_sum(c);
    if (lane == 0) {
        partial[0][warp] = a;
        partial[1][warp] = b;
        partial[2][warp] = c;
    }
    __syncthreads();
    if (warp == 0) {
        a = (lane < warps) ? partial[0][lane] : 0.0;
        b = (lane < warps) ? partial[1][lane] : 0.0;
        c = (lane < warps) ? partial[2][lane] : 0.0;
        a = calab_warp_sum(a);
        b = calab_warp_sum(b);
        c = calab_warp_sum(c);
        if (lane == 0) {
            total[0] = a;
            total[1] = b;
            total[2] = c;
        }
    }
    __syncthreads();
    a = total[0];
    b = total[1];
    c = total[2];
}

// The residual/padding step of the residual-form gradient (ragged batches, long
// kernels): full[b, i] <- (f32(full[b, i] * scale) - work[b, i]) * valid[b, i] for i < n
// and 0 for n <= i < ld, in place, so `full` is the zero-padded input of the adjoint FFT.
extern "C" __global__ void residual_pad(
    float* __restrict__ full, const float* __restrict__ work,
    const float* __restrict__ valid, const int has_valid,
    const unsigned char* __restrict__ active,
    const long long rows, const int n, const long long ld, const float scale)
{
    const long long total = rows * ld;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long b = idx / ld;
        const int i = (int)(idx - b * ld);
        if (!active[b]) continue;
        float value = 0.0f;
        if (i < n) {
            const long long at = b * (long long)n + i;
            value = full[idx] * scale;
            value = value - work[at];
            if (has_valid) value = value * valid[at];
        }
        full[idx] = value;
    }
}

// Fused FISTA update of one cell per block: gradient assembly, proximal step, momentum,
// float64 accumulators D/X/P, O'Donoghue-Candes restart, convergence test, freeze mask.
//
// gram = 1: g = f32(f32(full - corr) - data) with full the unnormalised inverse FFT of
//           rfft(y)·|K|²/P and corr = y[n-edge:] @ boundary on the last `edge` samples
//           (calab.fista.gram_boundary), data = K^T work;
// gram = 0: g = f32(full * scale) with full the unnormalised adjoint FFT of the residual.
// Dynamic shared memory: edge floats (the tail of y, read before y is overwritten).
extern "C" __global__ void fista_update_fft(
    float* __restrict__ x, float* __restrict__ ypad,
    const float* __restrict__ full, const float* __restrict__ data,
    const float* __restrict__ boundary,
    double* __restrict__ tmom, int* __restrict__ iters,
    unsigned char* __restrict__ active, unsigned char* __restrict__ converged,
    const float* __restrict__ threshold,
    const int n, const long long ld_y, const long long ld_f, const int edge,
    const int gram, const float step, const float scale, const int box,
    const long long cap, const double tol2, const int min_iters)
{
    extern __shared__ float tail[];
    const long long b = blockIdx.x;
    if (!active[b]) return;  // frozen cell: nothing changes (uniform per block)
    float* yrow = ypad + b * ld_y;
    float* xrow = x + b * (long long)n;
    const float* frow = full + b * ld_f;
    const float* drow = data + b * (long long)n;
    const int start = n - edge;
    if (gram) {
        for (int j = threadIdx.x; j < edge; j += blockDim.x) tail[j] = yrow[start + j];
        __syncthreads();
    }
    // Per-cell state is read by every thread here, before the barriers of the block sum;
    // thread 0 writes it only after them (no thread can read a value already updated).
    const double t_old = tmom[b];
    const int k_new = iters[b] + 1;
    const double t_next = (1.0 + sqrt(1.0 + 4.0 * t_old * t_old)) / 2.0;
    const float momentum = (float)((t_old - 1.0) / t_next);
    const float shrink = threshold[b];

    double change = 0.0, size = 0.0, signal = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float g;
        if (gram) {
            float f = frow[i];
            if (i >= start) {
                const int j = i - start;
                float corr = 0.0f;
                for (int q = 0; q < edge; ++q) corr = corr + tail[q] * boundary[(long long)q * edge + j];
                f = f - corr;
            }
            g = f - drow[i];
        } else {
            g = frow[i] * scale;
        }
        const float old = xrow[i];
        const float at = yrow[i];
        float value = at - step * g;
        value = value - shrink;
        float nw = calab_max0(value);
        if (box) nw = calab_min1(nw);
        float ahead = nw + momentum * (nw - old);
        ahead = calab_max0(ahead);
        if (box) ahead = calab_min1(ahead);
        xrow[i] = nw;
        yrow[i] = ahead;
        const double delta = (double)nw - (double)old;
        change += delta * delta;
        size += (double)old * (double)old;
        signal += ((double)at - (double)nw) * delta;
    }
    calab_block_sum3(change, size, signal);

    const bool restart = (k_new > 1) && (signal > 0.0);
    if (restart) {
        // y <- x for this cell; each thread rewrites the elements it wrote itself.
        for (int i = threadIdx.x; i < n; i += blockDim.x) yrow[i] = xrow[i];
    }
    if (threadIdx.x == 0) {
        const bool done = (k_new > min_iters) && (change < tol2 * (size + 1e-20));
        const bool conv = converged[b] || done;
        tmom[b] = restart ? 1.0 : t_next;
        iters[b] = k_new;
        converged[b] = conv;
        active[b] = (!conv) && ((long long)k_new < cap);
    }
}
