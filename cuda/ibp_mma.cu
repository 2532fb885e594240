// Linear and convolution layers for large batches on FP64 tensor cores (Hopper's DMMA,
// mma.sync m16n8k*, sm_90 and newer), in centre / radius form:
//
//   the input box [l, u] becomes c = l/2 + u/2 and r >= max(u - c, c - l) (rounded up), so
//   [l, u] lies inside [c - r, c + r];  v = r + gamma |c| (rounded up);
//   Yc = W c and G = |W| v are two f64 matrix products on the tensor cores (W is f32, exact
//   in f64); then R = (G + eta)(1 + 2 gamma) (rounded up) bounds |W| r plus the rounding error
//   of Yc, and the output box is [Yc + b - R, Yc + b + R] with directed rounding.
//
// gamma = (K + S + 2) 2^-51 allows every multiply and add of the K-term products (and the S
// split-K partial sums) a relative error of 2^-52, twice the unit roundoff of the
// round-to-nearest-even that PTX specifies for f64 mma, in any order of summation; eta covers
// underflow (2^-1021 per operation, enough even if subnormals were flushed). docs/soundness.md
// has the argument. An output whose Yc or R is not finite (an infinite input box, or overflow)
// is recomputed by the directed-rounding SIMT loop (ibp_common.cuh), so infinities give the
// same bounds as on the other paths.
//
// A linear layer is run as a 1 x 1 convolution of a 1 x 1 image. GEMM view of a convolution
// group: M = batch * oh * ow rows (output pixels), N = cout / groups columns (channels),
// K = cin / groups * kh * kw (weights are [cout][K] row-major, as stored).
#include "ibp_common.cuh"
#include "lvk.h"

namespace {

using lvk_ibp::ConvShape;

// Block shape: WF x WB warps, each FT * 16 output features (the mma's M side: the weights) by
// BT * 8 pixels or batch items (the N side: the centres and radii); BK k per shared-memory
// stage, STAGES stages in flight (cp.async), MIN_BLOCKS resident blocks per SM.
#pragma nv_diag_suppress 177 // members unused where the kernel body is compiled out (below sm_90)
template <int WF_, int WB_, int FT_, int BT_, int BK_, int STAGES_, int MIN_BLOCKS_> struct Tile {
    static constexpr int WF = WF_, WB = WB_, FT = FT_, BT = BT_, BK = BK_, STAGES = STAGES_, MIN_BLOCKS = MIN_BLOCKS_;
    static constexpr int BF = WF * FT * 16, BB = WB * BT * 8, T = WF * WB * 32;
    // Row strides: weights (f32) = 4 (mod 32) words and centres / radii (f64) = 4 (mod 16)
    // doubles make the fragment loads free of bank conflicts; rows stay 16-byte aligned.
    static constexpr int LDW = (BK + 28) / 32 * 32 + 4, LDX = (BK + 12) / 16 * 16 + 4;
    static_assert(LDW % 32 == 4 && LDX % 16 == 4, "conflict-free strides");
    static constexpr size_t STAGE_BYTES = (size_t)BF * LDW * sizeof(float) + (size_t)2 * BB * LDX * sizeof(double);
};
#pragma nv_diag_default 177

// cp.async: `bytes` from global (0: nothing is read and the destination is zero-filled).
[[maybe_unused]] __device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(valid ? 16 : 0));
}
[[maybe_unused]] __device__ __forceinline__ void cp_async8(void *dst, const void *src, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"((uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(valid ? 8 : 0));
}
[[maybe_unused]] __device__ __forceinline__ void cp_async4(void *dst, const void *src, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"((uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(valid ? 4 : 0));
}
struct Gemm {
    ConvShape c;
    const float *w, *bias;
    const double *lo, *hi; // input boxes (for outputs recomputed by the SIMT loop)
    const double *xc, *xv; // their centres c and radii-with-error-term v (centre_radius_kernel)
    double *olo, *ohi;
    double *part; // splits > 1: [2][splits][total] partial Yc and G, in output order
    uint32_t M, N, K, splits, k_per_split;
    uint64_t total; // batch * cout * oh * ow
    lvk_ibp::ErrorTerm err;
    int relu;
};

struct RowInfo {
    int64_t base; // input offset of (item, group, iy0, ix0)
    int32_t iy0, ix0;
};

template <int MK> __device__ __forceinline__ void mma(double (&d)[4], const double (&a)[MK / 2], const double (&b)[MK / 4]);

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
template <> __device__ __forceinline__ void mma<4>(double (&d)[4], const double (&a)[2], const double (&b)[1]) {
    asm volatile("mma.sync.aligned.m16n8k4.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                 : "+d"(d[0]), "+d"(d[1]), "+d"(d[2]), "+d"(d[3])
                 : "d"(a[0]), "d"(a[1]), "d"(b[0]));
}
#ifdef LVK_IBP_MMA_STUDY // the larger shapes, timed by bench/ibp_mma_study.cu
template <> __device__ __forceinline__ void mma<8>(double (&d)[4], const double (&a)[4], const double (&b)[2]) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+d"(d[0]), "+d"(d[1]), "+d"(d[2]), "+d"(d[3])
                 : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(b[0]), "d"(b[1]));
}
template <> __device__ __forceinline__ void mma<16>(double (&d)[4], const double (&a)[8], const double (&b)[4]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f64.f64.f64.f64 {%0,%1,%2,%3}, {%4,%5,%6,%7,%8,%9,%10,%11}, "
                 "{%12,%13,%14,%15}, {%0,%1,%2,%3};\n"
                 : "+d"(d[0]), "+d"(d[1]), "+d"(d[2]), "+d"(d[3])
                 : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(a[4]), "d"(a[5]), "d"(a[6]), "d"(a[7]),
                   "d"(b[0]), "d"(b[1]), "d"(b[2]), "d"(b[3]));
}
#endif
#endif

// The part of the problem a block computes: pixel tile m0 (bm rows), feature tile n0 (bn
// columns), k-split `split` ([k_begin, k_end)) and group g. Raster order: groups of GROUP_M
// pixel tiles share each weight tile while it is in L2.
struct BlockPos {
    uint32_t m0, n0, split, g, k_begin, k_end;
};

[[maybe_unused]] __device__ __forceinline__ BlockPos block_pos(const Gemm &p, uint32_t bm, uint32_t bn) {
    constexpr uint32_t GROUP_M = 8;
    const uint32_t tiles_m = (p.M + bm - 1) / bm, tiles_n = (p.N + bn - 1) / bn;
    const uint32_t per_group = GROUP_M * tiles_n, pid = blockIdx.x;
    const uint32_t first_m = (pid / per_group) * GROUP_M;
    const uint32_t gsz = min(tiles_m - first_m, GROUP_M);
    const uint32_t k_begin = blockIdx.y * p.k_per_split;
    return {(first_m + (pid % per_group) % gsz) * bm, ((pid % per_group) / gsz) * bn, blockIdx.y, blockIdx.z,
            k_begin, min(p.K, k_begin + p.k_per_split)};
}

// Convolutions: the input offset and window origin of each of the block's `count` pixel rows,
// into shared memory (then a barrier).
[[maybe_unused]] __device__ __forceinline__ void conv_rows(const Gemm &p, uint32_t m0, uint32_t g, uint32_t count,
                                                           RowInfo *rows) {
    const uint32_t hw = p.c.h * p.c.w, ohw = p.c.oh * p.c.ow;
    for (uint32_t r = threadIdx.x; r < count; r += blockDim.x) {
        uint32_t m = m0 + r;
        RowInfo ri = {0, INT32_MIN / 2, INT32_MIN / 2};
        if (m < p.M) {
            uint32_t b = m / ohw, pix = m % ohw, oy = pix / p.c.ow, ox = pix % p.c.ow;
            ri.iy0 = (int32_t)(oy * p.c.sh) - (int32_t)p.c.ph;
            ri.ix0 = (int32_t)(ox * p.c.sw) - (int32_t)p.c.pw;
            ri.base = ((int64_t)b * p.c.cin + (int64_t)g * (p.c.cin / p.c.groups)) * hw + (int64_t)ri.iy0 * p.c.w +
                      ri.ix0;
        }
        rows[r] = ri;
    }
    __syncthreads();
}

// Convolutions: where input element k (channel, kernel row, kernel column) of a pixel row lies,
// relative to the row's window origin; conv_inside: whether that is inside the image (else
// padding, the point 0).
struct KOffset {
    int64_t off;
    int32_t dy, dx;
};

[[maybe_unused]] __device__ __forceinline__ KOffset conv_k(const Gemm &p, uint32_t k) {
    uint32_t khw = p.c.kh * p.c.kw, ci = k / khw, rem = k % khw, ky = rem / p.c.kw, kx = rem % p.c.kw;
    int32_t dy = (int32_t)(ky * p.c.dh), dx = (int32_t)(kx * p.c.dw);
    return {(int64_t)ci * p.c.h * p.c.w + (int64_t)dy * p.c.w + dx, dy, dx};
}

[[maybe_unused]] __device__ __forceinline__ bool conv_inside(const Gemm &p, const RowInfo &ri, const KOffset &ko) {
    int32_t iy = ri.iy0 + ko.dy, ix = ri.ix0 + ko.dx;
    return iy >= 0 && iy < (int32_t)p.c.h && ix >= 0 && ix < (int32_t)p.c.w;
}

// Where GEMM element (m, n) of group g goes: batch item b, channel co, pixel pix, and its NCHW
// index (32-bit arithmetic: m < 2^31; the epilogue runs once per output).
struct OutPos {
    uint64_t idx;
    uint32_t b, co, pix;
};

[[maybe_unused]] __device__ __forceinline__ OutPos out_pos(const Gemm &p, uint32_t m, uint32_t n, uint32_t g) {
    uint32_t ohw = p.c.oh * p.c.ow, b = m / ohw, pix = m - b * ohw, co = g * p.N + n;
    return {((uint64_t)b * p.c.cout + co) * ohw + pix, b, co, pix};
}

// Final bounds of output `at` from its products Yc and G (see the top of the file).
__device__ void finish(const Gemm &p, OutPos at, double yc, double g) {
    const uint64_t idx = at.idx;
    const uint32_t b = at.b, co = at.co, pix = at.pix;
    double bv = p.bias != nullptr ? (double)p.bias[co] : 0.0;
    double lo, hi;
    if (!lvk_ibp::centre_radius_bounds(yc, g, bv, p.err, lo, hi)) {
        lvk_ibp::conv_element(p.c, p.w, p.lo, p.hi, b, co, pix / p.c.ow, pix % p.c.ow, lo, hi);
        lo = __dadd_rd(lo, bv);
        hi = __dadd_ru(hi, bv);
    }
    lo = lvk_ibp::fix_lo(lo);
    hi = lvk_ibp::fix_hi(hi);
    if (p.relu) { lo = fmax(lo, 0.0); hi = fmax(hi, 0.0); }
    p.olo[idx] = lo;
    p.ohi[idx] = hi;
}

// A block's result for output `at`: final bounds, or its split's partial products.
[[maybe_unused]] __device__ __forceinline__ void store_result(const Gemm &p, OutPos at, uint32_t split, double yc,
                                                            double g) {
    if (p.splits == 1) {
        finish(p, at, yc, g);
    } else {
        p.part[(uint64_t)split * p.total + at.idx] = yc;
        p.part[(uint64_t)(p.splits + split) * p.total + at.idx] = g;
    }
}

// One block: BF output features x BB pixels of one group and one k-split. The weights go to
// shared memory as f32 (half the bytes of f64; converted when a fragment is loaded), the
// centres and radii as f64, by cp.async STAGES - 1 stages ahead, with no register staging.
// VEC: K % 4 == 0, so weight rows (and, for linear layers, centre rows) move in 16-byte pieces.
template <class Cfg, bool CONV, bool VEC>
__global__ void __launch_bounds__(Cfg::T, Cfg::MIN_BLOCKS) async_kernel(Gemm p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 // never launched on older GPUs: no code for them
    constexpr int BF = Cfg::BF, BB = Cfg::BB, T = Cfg::T, BK = Cfg::BK, LDW = Cfg::LDW, LDX = Cfg::LDX;
    constexpr int FT = Cfg::FT, BT = Cfg::BT, WB = Cfg::WB, STAGES = Cfg::STAGES;
    static_assert(T % BK == 0 && (BF * BK) % (4 * T) == 0 && (BB * BK) % (2 * T) == 0 && (BB * BK) % T == 0,
                  "tile shape");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float *sw = reinterpret_cast<float *>(smem_raw);                                      // [STAGES][BF][LDW]
    double *sc = reinterpret_cast<double *>(smem_raw + (size_t)STAGES * BF * LDW * 4);     // [STAGES][BB][LDX]
    double *sv = sc + (size_t)STAGES * BB * LDX;                                          // [STAGES][BB][LDX]
    RowInfo *rows = reinterpret_cast<RowInfo *>(sv + (size_t)STAGES * BB * LDX);          // CONV: [BB]

    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t gid = lane >> 2, tig = lane & 3;
    const uint32_t wf = warp / WB, wb = warp % WB;
    const BlockPos bp = block_pos(p, BB, BF);
    const uint32_t m0 = bp.m0, n0 = bp.n0, split = bp.split, g = bp.g, k_begin = bp.k_begin, k_end = bp.k_end;
    if (CONV) conv_rows(p, m0, g, BB, rows);

    // Queues the copies of the stage starting at k0 into buffer s (zeros outside the problem
    // and in padding: the point 0 contributes nothing).
    auto load = [&](uint32_t k0, int s) {
        float *dw = sw + (size_t)s * BF * LDW;
        double *dc = sc + (size_t)s * BB * LDX, *dv = sv + (size_t)s * BB * LDX;
        const float *wg = p.w + (uint64_t)g * p.N * p.K;
        if (VEC) {
#pragma unroll
            for (int i = 0; i < BF * BK / 4 / T; i++) {
                uint32_t id = tid + i * T, r = id / (BK / 4), kc = (id % (BK / 4)) * 4, f = n0 + r, k = k0 + kc;
                bool ok = f < p.N && k < k_end;
                cp_async16(dw + r * LDW + kc, ok ? wg + (uint64_t)f * p.K + k : p.w, ok);
            }
        } else {
#pragma unroll 4
            for (int i = 0; i < BF * BK / T; i++) {
                uint32_t id = tid + i * T, r = id / BK, kc = id % BK, f = n0 + r, k = k0 + kc;
                bool ok = f < p.N && k < k_end;
                cp_async4(dw + r * LDW + kc, ok ? wg + (uint64_t)f * p.K + k : p.w, ok);
            }
        }
        if (CONV) {
            const uint32_t kc = tid % BK, k = k0 + kc;
            const bool kv = k < k_end;
            const KOffset ko = kv ? conv_k(p, k) : KOffset{0, 0, 0};
#pragma unroll 4
            for (int i = 0; i < BB * BK / T; i++) {
                uint32_t r = tid / BK + i * (T / BK);
                RowInfo ri = rows[r];
                bool ok = kv && conv_inside(p, ri, ko);
                uint64_t at = ok ? (uint64_t)(ri.base + ko.off) : 0;
                cp_async8(dc + r * LDX + kc, p.xc + at, ok);
                cp_async8(dv + r * LDX + kc, p.xv + at, ok);
            }
        } else if (VEC) {
#pragma unroll
            for (int i = 0; i < BB * BK / 2 / T; i++) {
                uint32_t id = tid + i * T, r = id / (BK / 2), kc = (id % (BK / 2)) * 2, m = m0 + r, k = k0 + kc;
                bool ok = m < p.M && k < k_end;
                uint64_t at = ok ? (uint64_t)m * p.K + k : 0;
                cp_async16(dc + r * LDX + kc, p.xc + at, ok);
                cp_async16(dv + r * LDX + kc, p.xv + at, ok);
            }
        } else {
#pragma unroll 4
            for (int i = 0; i < BB * BK / T; i++) {
                uint32_t id = tid + i * T, r = id / BK, kc = id % BK, m = m0 + r, k = k0 + kc;
                bool ok = m < p.M && k < k_end;
                uint64_t at = ok ? (uint64_t)m * p.K + k : 0;
                cp_async8(dc + r * LDX + kc, p.xc + at, ok);
                cp_async8(dv + r * LDX + kc, p.xv + at, ok);
            }
        }
    };

    double acc_c[FT][BT][4], acc_g[FT][BT][4];
#pragma unroll
    for (int i = 0; i < FT; i++)
#pragma unroll
        for (int j = 0; j < BT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) { acc_c[i][j][e] = 0.0; acc_g[i][j][e] = 0.0; }

    const uint32_t n_stages = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if ((uint32_t)s < n_stages) load(k_begin + s * BK, s);
        asm volatile("cp.async.commit_group;\n" ::);
    }
    for (uint32_t t = 0; t < n_stages; t++) {
        asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2));
        __syncthreads(); // stage t is in; every warp is done with the buffer refilled next
        if (t + STAGES - 1 < n_stages) load(k_begin + (t + STAGES - 1) * BK, (t + STAGES - 1) % STAGES);
        asm volatile("cp.async.commit_group;\n" ::);
        const int s = t % STAGES;
        const float *ws = sw + (size_t)s * BF * LDW + (wf * FT * 16 + gid) * LDW + tig;
        const double *cs = sc + (size_t)s * BB * LDX + (wb * BT * 8 + gid) * LDX + tig;
        const double *vs = sv + (size_t)s * BB * LDX + (wb * BT * 8 + gid) * LDX + tig;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 4) {
            double a[FT][2], bc[BT][1], bv[BT][1];
#pragma unroll
            for (int i = 0; i < FT; i++) {
                a[i][0] = ws[i * 16 * LDW + kk];
                a[i][1] = ws[(i * 16 + 8) * LDW + kk];
            }
#pragma unroll
            for (int j = 0; j < BT; j++) {
                bc[j][0] = cs[j * 8 * LDX + kk];
                bv[j][0] = vs[j * 8 * LDX + kk];
            }
#pragma unroll
            for (int i = 0; i < FT; i++) {
#pragma unroll
                for (int j = 0; j < BT; j++) mma<4>(acc_c[i][j], a[i], bc[j]);
                a[i][0] = fabs(a[i][0]);
                a[i][1] = fabs(a[i][1]);
#pragma unroll
                for (int j = 0; j < BT; j++) mma<4>(acc_g[i][j], a[i], bv[j]);
            }
        }
    }
    asm volatile("cp.async.wait_group 0;\n" ::);

    // Accumulator e of tile (i, j): feature gid (+ 8 for e >= 2), pixel 2 tig + (e & 1).
#pragma unroll
    for (int i = 0; i < FT; i++)
#pragma unroll
        for (int j = 0; j < BT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                uint32_t n = n0 + wf * FT * 16 + i * 16 + gid + 8 * (e >> 1);
                uint32_t m = m0 + wb * BT * 8 + j * 8 + 2 * tig + (e & 1);
                if (m < p.M && n < p.N) store_result(p, out_pos(p, m, n, g), split, acc_c[i][j][e], acc_g[i][j][e]);
            }
#endif
}

// Centres and radii-with-error-term of the input boxes (ibp_common.cuh), once per layer.
__global__ void centre_radius_kernel(const double *lo, const double *hi, uint64_t n, double gamma, double *xc,
                                     double *xv) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
        lvk_ibp::centre_radius(lo[i], hi[i], gamma, xc[i], xv[i]);
}

// Sums the split-K partials in a fixed order (deterministic) and finishes each output.
__global__ void finish_splits_kernel(Gemm p) {
    for (uint64_t idx = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; idx < p.total;
         idx += (uint64_t)gridDim.x * blockDim.x) {
        double yc = 0.0, g = 0.0;
        for (uint32_t s = 0; s < p.splits; s++) {
            yc += p.part[(uint64_t)s * p.total + idx];
            g += p.part[(uint64_t)(p.splits + s) * p.total + idx];
        }
        uint32_t ohw = p.c.oh * p.c.ow;
        finish(p, {idx, (uint32_t)(idx / ((uint64_t)p.c.cout * ohw)), (uint32_t)((idx / ohw) % p.c.cout), (uint32_t)(idx % ohw)},
               yc, g);
    }
}

// Everything around a GEMM kernel: the split-K choice (double the splits while the blocks still
// fit in one wave of `per_sm` blocks per SM, keeping at least 8 stages of `bk` per split), the error
// term, one stream-ordered scratch allocation (with `precompute`, the input's centres and radii,
// made by one pass before the kernel; then the split-K partials), the kernel
// (`kernel(p, splits)`), and the split-K finish.
template <class Kernel>
int run_gemm(Gemm &p, int sms, cudaStream_t s, uint64_t tiles, uint32_t bk, int per_sm, bool precompute,
             Kernel kernel) {
    if (tiles > 0x7fffffffu || p.c.groups > 65535u) return cudaErrorInvalidValue;
    uint64_t blocks = tiles * p.c.groups, stages = (p.K + bk - 1) / bk;
    uint32_t splits = 1;
    while (blocks * splits * 2 <= (uint64_t)per_sm * sms && stages / (splits * 2) >= 8 && splits < 16) splits *= 2;
    p.splits = splits;
    p.k_per_split = (uint32_t)(((stages + splits - 1) / splits) * bk);
    p.err = lvk_ibp::error_term((double)p.K + splits + 2.0);
    uint64_t n_in = precompute ? (uint64_t)p.M / (p.c.oh * p.c.ow) * p.c.cin * p.c.h * p.c.w : 0;
    size_t parts = splits > 1 ? (size_t)2 * splits * p.total : 0;
    double *scratch = nullptr;
    size_t bytes = (2 * n_in + parts) * sizeof(double);
    cudaError_t e = bytes > 0 ? (cudaError_t)lvk_scratch_malloc_async(reinterpret_cast<void **>(&scratch), bytes, s)
                              : cudaSuccess;
    if (e != cudaSuccess) return e;
    p.xc = scratch;
    p.xv = scratch + n_in;
    p.part = splits > 1 ? scratch + 2 * n_in : nullptr;
    if (precompute) {
        uint64_t cr_blocks = (n_in + 255) / 256;
        centre_radius_kernel<<<(unsigned)(cr_blocks > 65535 ? 65535 : cr_blocks), 256, 0, s>>>(
            p.lo, p.hi, n_in, p.err.gamma, scratch, scratch + n_in);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = (cudaError_t)kernel(p, splits);
    if (e == cudaSuccess && splits > 1) {
        uint64_t g = (p.total + 255) / 256;
        finish_splits_kernel<<<(unsigned)(g > 65535 ? 65535 : g), 256, 0, s>>>(p);
        e = cudaGetLastError();
    }
    cudaError_t f = scratch != nullptr ? cudaFreeAsync(scratch, s) : cudaSuccess;
    return e == cudaSuccess ? f : e;
}

template <class Cfg, bool CONV> int launch_async(Gemm &p, int sms, cudaStream_t s) {
    size_t smem = Cfg::STAGES * Cfg::STAGE_BYTES + (CONV ? Cfg::BB * sizeof(RowInfo) : 0);
    bool vec = p.K % 4 == 0 && (reinterpret_cast<uintptr_t>(p.w) & 15) == 0;
    auto kernel = vec ? async_kernel<Cfg, CONV, true> : async_kernel<Cfg, CONV, false>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    uint64_t tiles = (uint64_t)((p.M + Cfg::BB - 1) / Cfg::BB) * ((p.N + Cfg::BF - 1) / Cfg::BF);
    return run_gemm(p, sms, s, tiles, Cfg::BK, Cfg::MIN_BLOCKS, true, [&](Gemm &q, uint32_t splits) {
        kernel<<<dim3((unsigned)tiles, splits, q.c.groups), Cfg::T, smem, s>>>(q);
        return (int)cudaGetLastError();
    });
}

} // namespace
#include "ibp_mma_staged.cuh"
namespace {

// Chosen by bench/ibp_mma_study.cu on an H200 (bench/results/gpu-h200-2026-11-22c/ and later):
// wide linear layers take the cp.async kernel with 128 features x 32 items per block, three
// stages, two blocks per SM (70 % of DMMA peak at 1024 x 4096 x 4096, against 63 % for the
// register-staged kernel): eight warps of 32 x 16, or, for long sums (K >= 2048), four warps
// of 64 x 16, whose larger warp tiles load half as many fragments per mma. Those were 1.5-4 %
// faster at K = 4096 and 10-12 % slower at K = 1024 in each of four runs (-22d to -22g; no K
// in between was measured). Convolutions with at most 32 output channels take the cp.async
// kernel with 32-feature blocks; everything else the register-staged kernel with 64 x 64
// blocks, its centres and radii precomputed by a pass unless one block column covers all
// outputs.
using Wide = Tile<4, 2, 2, 2, 32, 3, 2>;
using WideLongK = Tile<2, 2, 4, 2, 32, 3, 2>;
using Narrow32 = Tile<1, 4, 2, 2, 16, 3, 2>;
using Staged = StagedTile<2, 4, 2, 16, 4, 2>;

template <bool CONV> int launch_for(Gemm &p, int sms, cudaStream_t s) {
    if (CONV) return p.N <= 32 ? launch_async<Narrow32, true>(p, sms, s) : launch_staged<Staged, true, true>(p, sms, s);
    bool wide = p.N >= 128 && p.K >= 128 && p.K % 4 == 0;
    if (wide) return p.K >= 2048 ? launch_async<WideLongK, false>(p, sms, s) : launch_async<Wide, false>(p, sms, s);
    // One block column reads each input once: centres in the loads beat a separate pass.
    return p.N <= Staged::BN ? launch_staged<Staged, false, false>(p, sms, s) : launch_staged<Staged, false, true>(p, sms, s);
}

} // namespace

extern "C" int lvk_ibp_conv2d_mma(const float *w, const float *bias, const uint32_t shape[15], uint32_t batch,
                                  const double *lo, const double *hi, double *olo, double *ohi, int relu,
                                  void *stream) {
    if (w == nullptr || shape == nullptr || lo == nullptr || hi == nullptr || olo == nullptr || ohi == nullptr)
        return cudaErrorInvalidValue;
    Gemm p = {};
    p.c = {shape[0], shape[1], shape[2], shape[3], shape[4], shape[5], shape[6], shape[7],
           shape[8], shape[9], shape[10], shape[11], shape[12], shape[13], shape[14]};
    if (p.c.groups == 0 || p.c.cin % p.c.groups || p.c.cout % p.c.groups || batch == 0) return cudaErrorInvalidValue;
    uint64_t m = (uint64_t)batch * p.c.oh * p.c.ow, k = (uint64_t)(p.c.cin / p.c.groups) * p.c.kh * p.c.kw;
    if (m == 0 || m > 0x7fffffffu || k == 0 || k > 0x7fffffffu || p.c.cout == 0) return cudaErrorInvalidValue;
    p.w = w;
    p.bias = bias;
    p.lo = lo;
    p.hi = hi;
    p.olo = olo;
    p.ohi = ohi;
    p.M = (uint32_t)m;
    p.N = p.c.cout / p.c.groups;
    p.K = (uint32_t)k;
    p.total = m * p.c.cout;
    p.relu = relu;
    int dev = 0, sms = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e != cudaSuccess) return e;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    bool linear = p.c.h == 1 && p.c.w == 1 && p.c.kh == 1 && p.c.kw == 1 && p.c.groups == 1;
    return linear ? launch_for<false>(p, sms, s) : launch_for<true>(p, sms, s);
}

extern "C" int lvk_ibp_linear_mma(const float *w, const float *bias, uint32_t in_f, uint32_t out_f, uint32_t batch,
                                  const double *lo, const double *hi, double *olo, double *ohi, int relu,
                                  void *stream) {
    const uint32_t shape[15] = {in_f, 1, 1, out_f, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1};
    return lvk_ibp_conv2d_mma(w, bias, shape, batch, lo, hi, olo, ohi, relu, stream);
}
