// calab CUDA kernel: exact causal rolling order statistic (the rolling 20th-percentile
// baseline, spec numerics.md §6), one warp per cell.
//
// Each warp keeps its cell's current window as a sorted array of order-preserving
// uint32 keys (IEEE total order, so -0 < +0 as in the reference), in shared memory (or in
// a global scratch row when the window is too long for shared memory).  Every step it
// removes the sample leaving the window and inserts the one entering it with one shift
// of the keys between the two positions, found by a warp-wide count of smaller keys,
// then reads the answer at the window's rank.  Samples are loaded and results stored 32
// at a time (coalesced) and broadcast with warp shuffles.  Exact for any input: the
// output is one of the input values, selected by rank.
//
// Ranks: t < W uses ranks[t] = min(round_half_away(t q), t) (growing window), t >= W
// uses full_rank.  The NumPy transliteration is reference.rolling_rank_sorted_window.

#define CALAB_FULL_MASK 0xffffffffu

__device__ __forceinline__ unsigned calab_key(float v) {
    const unsigned u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float calab_unkey(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ int calab_warp_isum(int v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(CALAB_FULL_MASK, v, offset);
    return v;
}

// keys[j] <- keys[j + 1] for lo <= j < hi
__device__ __forceinline__ void calab_shift_down(unsigned* keys, const int lo, const int hi, const int lane) {
    for (int base = lo; base < hi; base += 32) {
        const int j = base + lane;
        unsigned v = 0;
        if (j < hi) v = keys[j + 1];
        __syncwarp();
        if (j < hi) keys[j] = v;
        __syncwarp();
    }
}

// keys[j + 1] <- keys[j] for lo <= j < hi
__device__ __forceinline__ void calab_shift_up(unsigned* keys, const int lo, const int hi, const int lane) {
    for (int top = hi; top > lo; top -= 32) {
        const int j = top - 32 + lane;
        const bool mine = j >= lo;
        unsigned v = 0;
        if (mine) v = keys[j];
        __syncwarp();
        if (mine) keys[j + 1] = v;
        __syncwarp();
    }
}

__device__ void calab_rolling_rank_row(
    const float* __restrict__ src, float* __restrict__ dst, unsigned* keys,
    const int n, const int W, const int full_rank, const int* __restrict__ ranks)
{
    const int lane = threadIdx.x & 31;
    int count = 0;
    for (int base = 0; base < n; base += 32) {
        const int t = base + lane;
        const unsigned key_in = (t < n) ? calab_key(src[t]) : 0u;
        const unsigned key_out = (t < n && t >= W) ? calab_key(src[t - W]) : 0u;
        float mine = 0.0f;
        const int steps = min(32, n - base);
        for (int s = 0; s < steps; ++s) {
            const int tt = base + s;
            const unsigned vin = __shfl_sync(CALAB_FULL_MASK, key_in, s);
            const unsigned vout = __shfl_sync(CALAB_FULL_MASK, key_out, s);
            int rank;
            if (tt < W) {  // growing window: insert only
                int less = 0;
                for (int j = lane; j < count; j += 32) less += (keys[j] < vin) ? 1 : 0;
                less = calab_warp_isum(less);
                calab_shift_up(keys, less, count, lane);
                if (lane == 0) keys[less] = vin;
                __syncwarp();
                ++count;
                rank = ranks[tt];
            } else {  // full window: drop src[tt - W], insert src[tt]
                int less_out = 0, less_in = 0;
                for (int j = lane; j < count; j += 32) {
                    const unsigned k = keys[j];
                    less_out += (k < vout) ? 1 : 0;
                    less_in += (k < vin) ? 1 : 0;
                }
                less_out = calab_warp_isum(less_out);
                less_in = calab_warp_isum(less_in);
                int slot;
                if (vin > vout) {
                    slot = less_in - 1;
                    calab_shift_down(keys, less_out, slot, lane);
                } else {
                    slot = less_in;
                    calab_shift_up(keys, slot, less_out, lane);
                }
                if (lane == 0) keys[slot] = vin;
                __syncwarp();
                rank = full_rank;
            }
            const unsigned answer = keys[rank];
            if (lane == s) mine = calab_unkey(answer);
            __syncwarp();
        }
        if (t < n) dst[t] = mine;
    }
}

// Window keys in dynamic shared memory: W unsigned per warp.
extern "C" __global__ void rolling_rank_shared(
    const float* __restrict__ traces, float* __restrict__ out, const long long rows,
    const int n, const int W, const int full_rank, const int* __restrict__ ranks)
{
    extern __shared__ unsigned window_keys[];
    const int warp = threadIdx.x >> 5;
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + warp;
    if (row >= rows) return;  // whole warp leaves together
    calab_rolling_rank_row(traces + row * n, out + row * n, window_keys + (long long)warp * W,
                           n, W, full_rank, ranks);
}

// Window keys in a global scratch array of (rows, W) unsigned (very long windows).
extern "C" __global__ void rolling_rank_global(
    const float* __restrict__ traces, float* __restrict__ out, unsigned* __restrict__ scratch,
    const long long rows, const int n, const int W, const int full_rank,
    const int* __restrict__ ranks)
{
    const int warp = threadIdx.x >> 5;
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + warp;
    if (row >= rows) return;
    calab_rolling_rank_row(traces + row * n, out + row * n, scratch + row * W,
                           n, W, full_rank, ranks);
}
