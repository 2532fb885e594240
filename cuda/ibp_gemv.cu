// Linear layers for small batches (1 to 8 boxes), where reading the weights is the whole cost.
//
// One warp per output row streams the row once with 16-byte loads and forms the centre product
// W c and the radius product |W| v together, with round-to-nearest FMAs and the explicit error
// term of the tensor-core kernels (ibp_common.cuh, docs/soundness.md): two FMAs per weight and
// no branches, where per-weight directed rounding needs a sign test and two selects as well.
// An output whose sums are not finite is recomputed by the warp with directed rounding.
//
// The boxes' centres and radii are computed once per block into shared memory, laid out so
// that each lane's 16-byte loads of a warp fall on consecutive addresses (no bank conflicts:
// the plain layout made every load two wavefronts, and that, not DRAM, bounded the kernel).
//
// On Hopper consecutive layers overlap (programmatic dependent launch): each block lets the
// next layer's grid start at once, and issues the first loads of its weight rows (which no
// kernel writes) before waiting for the previous layer's bounds, so one layer's tail and the
// next one's start share the memory system instead of leaving it idle.
#include <atomic>

#include "ibp_common.cuh"
#include "lvk.h"

namespace {

using lvk_ibp::ErrorTerm;

struct GemvArgs {
    const float *w, *bias;
    uint32_t in_f, out_f, batch;
    const double *lo, *hi; // [batch][in_f]
    double *olo, *ohi;     // [batch][out_f]
    ErrorTerm err;
    int relu, staged;
};

// Staged position of element k of a box of n (a multiple of 4) values: planes of double2 so
// that lane j's pairs (4j, 4j+1) and (4j+2, 4j+3) sit at index j of planes 0 and 1.
__device__ __forceinline__ uint32_t plane_pos(uint32_t k, uint32_t n) {
    return ((((k >> 1) & 1u) * (n >> 2) + (k >> 2)) << 1) | (k & 1u);
}

// Stages the centres and radii of the boxes (n a multiple of 4, 16-byte aligned bounds) in the
// plane layout, four consecutive elements (a quad) at a time. Each thread issues the loads of
// Q quads before converting any: the bounds were just written by the previous layer and come
// from L2, and one load after another (the plain loop) cost about 1.3 us per layer while
// every block waited for its input (bench/ibp_mma_study.cu).
template <int Q> __device__ __forceinline__ void stage_quads(const GemvArgs &p, double *sc, double *sv) {
    const uint32_t n = p.in_f, n4 = n >> 2, total = p.batch * n4;
    const double2 *l2 = reinterpret_cast<const double2 *>(p.lo), *h2 = reinterpret_cast<const double2 *>(p.hi);
    for (uint32_t q0 = threadIdx.x; q0 < total; q0 += Q * blockDim.x) {
        double2 l[Q][2], h[Q][2];
#pragma unroll
        for (int t = 0; t < Q; t++) {
            uint32_t q = q0 + t * blockDim.x;
            if (q < total) {
                l[t][0] = l2[2 * q];
                l[t][1] = l2[2 * q + 1];
                h[t][0] = h2[2 * q];
                h[t][1] = h2[2 * q + 1];
            }
        }
#pragma unroll
        for (int t = 0; t < Q; t++) {
            uint32_t q = q0 + t * blockDim.x;
            if (q >= total) break;
            // Quad j of box b: elements (4j, 4j+1) at index j of plane 0, (4j+2, 4j+3) of plane 1.
            uint32_t b = q / n4, j = q % n4;
            double2 c[2], v[2];
#pragma unroll
            for (int half = 0; half < 2; half++) {
                lvk_ibp::centre_radius(l[t][half].x, h[t][half].x, p.err.gamma, c[half].x, v[half].x);
                lvk_ibp::centre_radius(l[t][half].y, h[t][half].y, p.err.gamma, c[half].y, v[half].y);
            }
            double2 *c2 = reinterpret_cast<double2 *>(sc + (size_t)b * n), *v2 = reinterpret_cast<double2 *>(sv + (size_t)b * n);
            c2[j] = c[0];
            c2[n4 + j] = c[1];
            v2[j] = v[0];
            v2[n4 + j] = v[1];
        }
    }
}

// Row `row` of item b recomputed with directed rounding (non-finite centre / radius sums: an
// infinite input bound or overflow), by the whole warp.
__device__ void row_directed(const GemvArgs &p, uint32_t row, uint32_t b, uint32_t lane, double &lo, double &hi) {
    const float *wr = p.w + (uint64_t)row * p.in_f;
    const double *l = p.lo + (uint64_t)b * p.in_f, *u = p.hi + (uint64_t)b * p.in_f;
    double acc_lo = 0.0, acc_hi = 0.0;
    for (uint32_t j = lane; j < p.in_f; j += 32) {
        double wv = wr[j];
        if (wv == 0.0) continue; // 0 * inf would be NaN, and contributes nothing
        bool pos = wv > 0.0;
        acc_lo = __fma_rd(wv, pos ? l[j] : u[j], acc_lo);
        acc_hi = __fma_ru(wv, pos ? u[j] : l[j], acc_hi);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        acc_lo = __dadd_rd(acc_lo, __shfl_xor_sync(0xffffffffu, acc_lo, off));
        acc_hi = __dadd_ru(acc_hi, __shfl_xor_sync(0xffffffffu, acc_hi, off));
    }
    lo = acc_lo;
    hi = acc_hi;
}

// WARPS warps per block, R rows per warp (the centres and radii read from shared memory once
// serve R rows); NB boxes per pass over the rows; U 16-byte loads per row in flight per lane.
// MIN_BLOCKS: resident blocks per SM the registers must allow (2 would let the next layer's
// block share the SM while this one finishes; measured slower, kept for the study).
// STAGE_QUADS: quads of the input each thread loads at once when staging (0: the plain
// element loop, kept for the study).
template <int WARPS, int R, int NB, int U, int MIN_BLOCKS = 1, int STAGE_QUADS = 2>
__global__ void __launch_bounds__(WARPS * 32, MIN_BLOCKS) gemv_kernel(GemvArgs p) {
    extern __shared__ double sx[]; // staged: centres [batch][in_f], then radii (plane layout when vec)
    lvk_ibp::let_next_grid_start();
    const uint32_t lane = threadIdx.x & 31, row0 = (blockIdx.x * WARPS + (threadIdx.x >> 5)) * R;
    const uint32_t n = p.in_f, n4 = n >> 2;
    const bool vec = p.staged && (n & 3u) == 0 && (reinterpret_cast<uintptr_t>(p.w) & 15) == 0;
    const float4 *w4[R];
    float4 q[R][U];
#pragma unroll
    for (int r = 0; r < R; r++) {
        // A row past the end reads row 0 (never written out), so every load stays in bounds.
        uint32_t row = row0 + r < p.out_f ? row0 + r : 0;
        w4[r] = reinterpret_cast<const float4 *>(p.w + (uint64_t)row * n);
#pragma unroll
        for (int t = 0; t < U; t++) {
            q[r][t] = make_float4(0.f, 0.f, 0.f, 0.f);
            if (vec && lane + 32u * t < n4) q[r][t] = __ldg(w4[r] + lane + 32u * t);
        }
    }
    lvk_ibp::wait_for_previous_grid();

    const double gamma = p.err.gamma;
    double *sc = sx, *sv = sx + (size_t)p.batch * n;
    if (p.staged) {
        if (STAGE_QUADS > 0 && vec && (reinterpret_cast<uintptr_t>(p.lo) & 15) == 0 &&
            (reinterpret_cast<uintptr_t>(p.hi) & 15) == 0)
            stage_quads<(STAGE_QUADS > 0 ? STAGE_QUADS : 1)>(p, sc, sv);
        else
            for (uint32_t i = threadIdx.x; i < p.batch * n; i += blockDim.x) {
                uint32_t b = i / n, k = i % n;
                double c, v;
                lvk_ibp::centre_radius(p.lo[i], p.hi[i], gamma, c, v);
                uint32_t at = b * n + (vec ? plane_pos(k, n) : k);
                sc[at] = c;
                sv[at] = v;
            }
        __syncthreads();
    }
    if (row0 >= p.out_f) return;

    for (uint32_t b0 = 0; b0 < p.batch; b0 += NB) {
        double yc[R][NB], g[R][NB];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int b = 0; b < NB; b++) { yc[r][b] = 0.0; g[r][b] = 0.0; }
        if (vec) {
            for (uint32_t base = 0; base < n4; base += 32u * U) {
                if (base > 0 || b0 > 0) {
#pragma unroll
                    for (int r = 0; r < R; r++)
#pragma unroll
                        for (int t = 0; t < U; t++) {
                            uint32_t j = base + lane + 32u * t;
                            q[r][t] = j < n4 ? __ldg(w4[r] + j) : make_float4(0.f, 0.f, 0.f, 0.f);
                        }
                }
#pragma unroll
                for (int t = 0; t < U; t++) {
                    uint32_t j = base + lane + 32u * t;
                    if (j >= n4) break;
#pragma unroll
                    for (int b = 0; b < NB; b++) {
                        if (b0 + b >= p.batch) break;
                        const double2 *c2 = reinterpret_cast<const double2 *>(sc + (size_t)(b0 + b) * n);
                        const double2 *v2 = reinterpret_cast<const double2 *>(sv + (size_t)(b0 + b) * n);
                        double2 ca = c2[j], cb = c2[n4 + j], va = v2[j], vb = v2[n4 + j];
#pragma unroll
                        for (int r = 0; r < R; r++) {
                            double w0 = q[r][t].x, w1 = q[r][t].y, w2 = q[r][t].z, w3 = q[r][t].w;
                            yc[r][b] = fma(w0, ca.x, yc[r][b]);
                            yc[r][b] = fma(w1, ca.y, yc[r][b]);
                            yc[r][b] = fma(w2, cb.x, yc[r][b]);
                            yc[r][b] = fma(w3, cb.y, yc[r][b]);
                            g[r][b] = fma(fabs(w0), va.x, g[r][b]);
                            g[r][b] = fma(fabs(w1), va.y, g[r][b]);
                            g[r][b] = fma(fabs(w2), vb.x, g[r][b]);
                            g[r][b] = fma(fabs(w3), vb.y, g[r][b]);
                        }
                    }
                }
            }
        } else {
            for (uint32_t k = lane; k < n; k += 32) {
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    if (b0 + b >= p.batch) break;
                    uint64_t i = (uint64_t)(b0 + b) * n + k;
                    double c, v;
                    if (p.staged) {
                        c = sc[i];
                        v = sv[i];
                    } else {
                        lvk_ibp::centre_radius(p.lo[i], p.hi[i], gamma, c, v);
                    }
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        double wv = __ldg(reinterpret_cast<const float *>(w4[r]) + k);
                        yc[r][b] = fma(wv, c, yc[r][b]);
                        g[r][b] = fma(fabs(wv), v, g[r][b]);
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            const uint32_t row = row0 + r;
            if (row >= p.out_f) break;
            const double bias = p.bias != nullptr ? (double)p.bias[row] : 0.0;
#pragma unroll
            for (int b = 0; b < NB; b++) {
                if (b0 + b >= p.batch) break;
#pragma unroll
                for (int off = 16; off > 0; off >>= 1) {
                    yc[r][b] += __shfl_xor_sync(0xffffffffu, yc[r][b], off);
                    g[r][b] += __shfl_xor_sync(0xffffffffu, g[r][b], off);
                }
                double lo, hi;
                // Every lane holds the same sums, so the fallback is taken by the whole warp.
                if (!lvk_ibp::centre_radius_bounds(yc[r][b], g[r][b], bias, p.err, lo, hi)) {
                    row_directed(p, row, b0 + b, lane, lo, hi);
                    lo = __dadd_rd(lo, bias);
                    hi = __dadd_ru(hi, bias);
                }
                lo = lvk_ibp::fix_lo(lo);
                hi = lvk_ibp::fix_hi(hi);
                if (p.relu) { lo = fmax(lo, 0.0); hi = fmax(hi, 0.0); }
                if (lane == 0) {
                    p.olo[(uint64_t)(b0 + b) * p.out_f + row] = lo;
                    p.ohi[(uint64_t)(b0 + b) * p.out_f + row] = hi;
                }
            }
        }
    }
}

template <int WARPS, int R, int NB, int U, int MIN_BLOCKS = 1, int STAGE_QUADS = 2>
int launch_gemv(GemvArgs &p, size_t smem, int dev, bool overlap, cudaStream_t s) {
    auto kernel = gemv_kernel<WARPS, R, NB, U, MIN_BLOCKS, STAGE_QUADS>;
    // The shared-memory limit is set once per kernel and device: it persists, and setting it
    // on every call cost host time that small layers notice.
    static std::atomic<uint64_t> raised{0};
    uint64_t bit = dev >= 0 && dev < 64 ? 1ull << dev : 0;
    if (smem > 48 * 1024 && (bit == 0 || !(raised.load(std::memory_order_relaxed) & bit))) {
        cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 * 1024);
        if (e != cudaSuccess) return e;
        raised.fetch_or(bit, std::memory_order_relaxed);
    }
    return lvk_ibp::launch_overlapping(kernel, dim3((p.out_f + WARPS * R - 1) / (WARPS * R)), dim3(WARPS * 32), smem, s,
                                       overlap, p);
}

} // namespace

extern "C" int lvk_ibp_linear_gemv(const float *w, const float *bias, uint32_t in_f, uint32_t out_f, uint32_t batch,
                                   const double *lo, const double *hi, double *olo, double *ohi, int relu,
                                   void *stream) {
    if (w == nullptr || lo == nullptr || hi == nullptr || olo == nullptr || ohi == nullptr) return cudaErrorInvalidValue;
    if (in_f == 0 || out_f == 0 || batch == 0 || batch > 8) return cudaErrorInvalidValue;
    GemvArgs p = {w, bias, in_f, out_f, batch, lo, hi, olo, ohi, lvk_ibp::error_term((double)in_f + 2.0), relu, 0};
    size_t smem = (size_t)batch * in_f * 2 * sizeof(double);
    p.staged = smem <= 96 * 1024;
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    bool overlap = lvk_ibp::hopper_or_newer(dev); // programmatic dependent launch
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    smem = p.staged ? smem : 0;
    // Wide layers: 16 warps of two rows per block (128 blocks for 4096 rows: each block stages
    // the input once for 32 rows), the fastest of nine shapes in bench/ibp_mma_study.cu (capping
    // registers so that the next layer's block fits beside it was 11 % slower); narrow ones:
    // small blocks, more of them.
    if (batch == 1)
        return in_f >= 1024 ? launch_gemv<16, 2, 1, 4>(p, smem, dev, overlap, s)
                            : launch_gemv<4, 1, 1, 8>(p, smem, dev, overlap, s);
    if (batch == 2)
        return in_f >= 1024 ? launch_gemv<16, 2, 2, 4>(p, smem, dev, overlap, s)
                            : launch_gemv<4, 1, 2, 4>(p, smem, dev, overlap, s);
    return in_f >= 1024 ? launch_gemv<16, 1, 4, 2>(p, smem, dev, overlap, s)
                        : launch_gemv<4, 1, 4, 2>(p, smem, dev, overlap, s);
}
