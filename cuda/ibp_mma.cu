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

// Block shape: WARPS_M x WARPS_N warps, each 32 rows x NT * 8 columns; BK k per shared-memory
// stage; MK the k of the mma shape; MIN_BLOCKS resident blocks per SM (register budget).
#pragma nv_diag_suppress 177 // members unused where the kernel body is compiled out (below sm_90)
template <int WARPS_M_, int WARPS_N_, int NT_, int BK_, int MK_, int MIN_BLOCKS_> struct Tile {
    static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, NT = NT_, BK = BK_, MK = MK_;
    static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
    static constexpr int BM = WARPS_M * 32, BN = WARPS_N * NT * 8, T = WARPS_M * WARPS_N * 32;
    // Row stride in doubles: = 4 (mod 16) makes the fragment loads free of bank conflicts.
    static constexpr int LDK = BK + 4;
    static_assert(LDK % 16 == 4, "conflict-free stride");
};
#pragma nv_diag_default 177

struct Gemm {
    ConvShape c;
    const float *w, *bias;
    const double *lo, *hi; // input boxes (for outputs recomputed by the SIMT loop)
    const double *xc, *xv; // their centres c and radii-with-error-term v (centre_radius_kernel)
    double *olo, *ohi;
    double *part; // splits > 1: [2][splits][total] partial Yc and G, in output order
    uint32_t M, N, K, splits, k_per_split;
    uint64_t total; // batch * cout * oh * ow
    double gamma, one_plus_2gamma, eta;
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

// Output index (NCHW) of GEMM element (m, n) of group g.
[[maybe_unused]] __device__ __forceinline__ uint64_t out_index(const Gemm &p, uint32_t m, uint32_t n, uint32_t g) {
    uint32_t ohw = p.c.oh * p.c.ow;
    uint64_t b = m / ohw;
    return (b * p.c.cout + (uint64_t)g * p.N + n) * ohw + m % ohw;
}

// Final bounds of output `idx` from its products Yc and G (see the top of the file).
__device__ void finish(const Gemm &p, uint64_t idx, double yc, double g) {
    uint32_t ohw = p.c.oh * p.c.ow;
    uint64_t b = idx / ((uint64_t)p.c.cout * ohw);
    uint32_t co = (uint32_t)((idx / ohw) % p.c.cout), pix = (uint32_t)(idx % ohw);
    double bv = p.bias != nullptr ? (double)p.bias[co] : 0.0;
    double r = __dmul_ru(__dadd_ru(g, p.eta), p.one_plus_2gamma);
    double lo, hi;
    if (isfinite(yc) && isfinite(r)) {
        lo = __dsub_rd(__dadd_rd(yc, bv), r);
        hi = __dadd_ru(__dadd_ru(yc, bv), r);
    } else {
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

// One block: a BM x BN tile of one group and one k-split.
template <class Cfg, bool CONV> __global__ void __launch_bounds__(Cfg::T, Cfg::MIN_BLOCKS) mma_kernel(Gemm p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 // never launched on older GPUs: no code for them
    constexpr int BM = Cfg::BM, BN = Cfg::BN, T = Cfg::T, BK = Cfg::BK, LDK = Cfg::LDK, MK = Cfg::MK, NT = Cfg::NT;
    constexpr int WARPS_N = Cfg::WARPS_N;
    constexpr int A_PER = BM * BK / T, B_PER = BN * BK / T;
    static_assert(T % BK == 0 && A_PER * T == BM * BK && B_PER * T == BN * BK, "tile shape");
    extern __shared__ double smem[];
    double *sc = smem, *sv = sc + 2 * BM * LDK, *sw = sv + 2 * BM * LDK; // two stages each
    RowInfo *rows = reinterpret_cast<RowInfo *>(sw + 2 * BN * LDK);

    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t gid = lane >> 2, tig = lane & 3;
    const uint32_t wm = warp / WARPS_N, wn = warp % WARPS_N;
    // Raster order: groups of GROUP_M M-tiles share each weight tile while it is in L2.
    constexpr uint32_t GROUP_M = 8;
    const uint32_t tiles_m = (p.M + BM - 1) / BM, tiles_n = (p.N + BN - 1) / BN;
    const uint32_t per_group = GROUP_M * tiles_n, pid = blockIdx.x;
    const uint32_t first_m = (pid / per_group) * GROUP_M;
    const uint32_t gsz = min(tiles_m - first_m, (uint32_t)GROUP_M);
    const uint32_t m0 = (first_m + (pid % per_group) % gsz) * BM, n0 = ((pid % per_group) / gsz) * BN;
    const uint32_t split = blockIdx.y, g = blockIdx.z;
    const uint32_t k_begin = split * p.k_per_split, k_end = min(p.K, k_begin + p.k_per_split);
    const uint32_t hw = p.c.h * p.c.w, ohw = p.c.oh * p.c.ow, kk_t = tid % BK;

    if (CONV) {
        for (uint32_t r = tid; r < BM; r += T) {
            uint32_t m = m0 + r;
            RowInfo ri = {0, INT32_MIN / 2, INT32_MIN / 2};
            if (m < p.M) {
                uint32_t b = m / ohw, pix = m % ohw, oy = pix / p.c.ow, ox = pix % p.c.ow;
                ri.iy0 = (int32_t)(oy * p.c.sh) - (int32_t)p.c.ph;
                ri.ix0 = (int32_t)(ox * p.c.sw) - (int32_t)p.c.pw;
                ri.base = ((int64_t)b * p.c.cin + (int64_t)g * (p.c.cin / p.c.groups)) * hw +
                          (int64_t)ri.iy0 * p.c.w + ri.ix0;
            }
            rows[r] = ri;
        }
        __syncthreads();
    }

    double acc_c[2][NT][4], acc_g[2][NT][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) { acc_c[i][j][e] = 0.0; acc_g[i][j][e] = 0.0; }

    double pc[A_PER], pv[A_PER];
    float pw[B_PER];
    // Loads the stage starting at k0 into registers (zeros outside the problem and in padding).
    auto load = [&](uint32_t k0) {
        uint32_t k = k0 + kk_t;
        bool kv = k < k_end;
        int64_t koff = 0;
        int32_t dy = 0, dx = 0;
        if (CONV && kv) {
            uint32_t khw = p.c.kh * p.c.kw, ci = k / khw, rem = k % khw, ky = rem / p.c.kw, kx = rem % p.c.kw;
            dy = (int32_t)(ky * p.c.dh);
            dx = (int32_t)(kx * p.c.dw);
            koff = (int64_t)ci * hw + (int64_t)dy * p.c.w + dx;
        }
#pragma unroll
        for (int i = 0; i < A_PER; i++) {
            uint32_t r = tid / BK + i * (T / BK), m = m0 + r;
            double c = 0.0, v = 0.0; // padding and out-of-range: the point 0
            if (CONV) {
                RowInfo ri = rows[r];
                int32_t iy = ri.iy0 + dy, ix = ri.ix0 + dx;
                if (kv && iy >= 0 && iy < (int32_t)p.c.h && ix >= 0 && ix < (int32_t)p.c.w) {
                    c = __ldg(p.xc + ri.base + koff);
                    v = __ldg(p.xv + ri.base + koff);
                }
            } else if (kv && m < p.M) {
                c = __ldg(p.xc + (uint64_t)m * p.K + k);
                v = __ldg(p.xv + (uint64_t)m * p.K + k);
            }
            pc[i] = c;
            pv[i] = v;
        }
#pragma unroll
        for (int i = 0; i < B_PER; i++) {
            uint32_t n = n0 + tid / BK + i * (T / BK);
            pw[i] = (kv && n < p.N) ? __ldg(p.w + ((uint64_t)g * p.N + n) * p.K + k) : 0.0f;
        }
    };
    // The staged centres and radii, and the weights as f64, into stage `s`.
    auto store = [&](int s) {
#pragma unroll
        for (int i = 0; i < A_PER; i++) {
            uint32_t r = tid / BK + i * (T / BK);
            sc[(s * BM + r) * LDK + kk_t] = pc[i];
            sv[(s * BM + r) * LDK + kk_t] = pv[i];
        }
#pragma unroll
        for (int i = 0; i < B_PER; i++) sw[(s * BN + tid / BK + i * (T / BK)) * LDK + kk_t] = (double)pw[i];
    };

    const uint32_t n_stages = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;
    if (n_stages > 0) {
        load(k_begin);
        store(0);
    }
    __syncthreads();
    for (uint32_t t = 0; t < n_stages; t++) {
        const int s = t & 1;
        if (t + 1 < n_stages) load(k_begin + (t + 1) * BK);
        const double *cs = sc + s * BM * LDK, *vs = sv + s * BM * LDK, *ws = sw + s * BN * LDK;
#pragma unroll
        for (int kk = 0; kk < BK; kk += MK) {
            double ac[2][MK / 2], av[2][MK / 2], bw[NT][MK / 4];
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int q = 0; q < MK / 2; q++) {
                    uint32_t row = wm * 32 + i * 16 + gid + 8 * (q & 1), col = kk + tig + 4 * (q >> 1);
                    ac[i][q] = cs[row * LDK + col];
                    av[i][q] = vs[row * LDK + col];
                }
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int q = 0; q < MK / 4; q++) bw[j][q] = ws[(wn * NT * 8 + j * 8 + gid) * LDK + kk + tig + 4 * q];
#pragma unroll
            for (int j = 0; j < NT; j++) {
#pragma unroll
                for (int i = 0; i < 2; i++) mma<MK>(acc_c[i][j], ac[i], bw[j]);
#pragma unroll
                for (int q = 0; q < MK / 4; q++) bw[j][q] = fabs(bw[j][q]);
#pragma unroll
                for (int i = 0; i < 2; i++) mma<MK>(acc_g[i][j], av[i], bw[j]);
            }
        }
        if (t + 1 < n_stages) store(s ^ 1);
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                uint32_t m = m0 + wm * 32 + i * 16 + gid + 8 * (e >> 1), n = n0 + wn * NT * 8 + j * 8 + 2 * tig + (e & 1);
                if (m >= p.M || n >= p.N) continue;
                uint64_t idx = out_index(p, m, n, g);
                if (p.splits == 1) {
                    finish(p, idx, acc_c[i][j][e], acc_g[i][j][e]);
                } else {
                    p.part[(uint64_t)split * p.total + idx] = acc_c[i][j][e];
                    p.part[(uint64_t)(p.splits + split) * p.total + idx] = acc_g[i][j][e];
                }
            }
#endif
}

// c = l/2 + u/2 and v = r + gamma |c| with r = max(u - c, c - l), rounded up: [l, u] lies in
// [c - r, c + r] for any c, so c needs no rounding control.
__global__ void centre_radius_kernel(const double *lo, const double *hi, uint64_t n, double gamma, double *xc,
                                     double *xv) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
        double l = lo[i], u = hi[i], c = 0.5 * l + 0.5 * u;
        double r = fmax(__dsub_ru(u, c), __dsub_ru(c, l));
        xc[i] = c;
        xv[i] = __dadd_ru(r, __dmul_ru(gamma, fabs(c)));
    }
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
        finish(p, idx, yc, g);
    }
}

template <class Cfg, bool CONV> int launch(Gemm &p, int sms, cudaStream_t s) {
    constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK;
    auto kernel = mma_kernel<Cfg, CONV>;
    size_t smem = (size_t)2 * (2 * BM + BN) * Cfg::LDK * sizeof(double) + BM * sizeof(RowInfo);
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    uint64_t tiles = (uint64_t)((p.M + BM - 1) / BM) * ((p.N + BN - 1) / BN);
    uint64_t blocks = tiles * p.c.groups;
    // Split K when the tiles alone would leave SMs idle, keeping at least 8 stages per split.
    uint32_t splits = 1;
    uint64_t stages = (p.K + BK - 1) / BK;
    while (blocks * splits < (uint64_t)2 * sms && stages / (splits * 2) >= 8 && splits < 16) splits *= 2;
    p.splits = splits;
    p.k_per_split = (uint32_t)(((stages + splits - 1) / splits) * BK);
    double n = (double)p.K + splits + 2.0;
    p.gamma = ldexp(n, -51);
    p.one_plus_2gamma = 1.0 + 2.0 * p.gamma; // exact: n < 2^40
    p.eta = ldexp(n, -1020);
    if (tiles > 0x7fffffffu || p.c.groups > 65535u) return cudaErrorInvalidValue;
    // One stream-ordered scratch allocation: centres and radii of the input, then the split-K partials.
    uint64_t n_in = (uint64_t)p.M / (p.c.oh * p.c.ow) * p.c.cin * p.c.h * p.c.w;
    size_t parts = splits > 1 ? (size_t)2 * splits * p.total : 0;
    double *scratch = nullptr;
    e = (cudaError_t)lvk_scratch_malloc_async(reinterpret_cast<void **>(&scratch), (2 * n_in + parts) * sizeof(double), s);
    if (e != cudaSuccess) return e;
    p.xc = scratch;
    p.xv = scratch + n_in;
    p.part = splits > 1 ? scratch + 2 * n_in : nullptr;
    uint64_t cr_blocks = (n_in + 255) / 256;
    centre_radius_kernel<<<(unsigned)(cr_blocks > 65535 ? 65535 : cr_blocks), 256, 0, s>>>(p.lo, p.hi, n_in, p.gamma,
                                                                                         scratch, scratch + n_in);
    e = cudaGetLastError();
    if (e == cudaSuccess) {
        kernel<<<dim3((unsigned)tiles, splits, p.c.groups), Cfg::T, smem, s>>>(p);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess && splits > 1) {
        uint64_t g = (p.total + 255) / 256;
        finish_splits_kernel<<<(unsigned)(g > 65535 ? 65535 : g), 256, 0, s>>>(p);
        e = cudaGetLastError();
    }
    cudaError_t f = cudaFreeAsync(scratch, s);
    return e == cudaSuccess ? f : e;
}

// Chosen by bench/ibp_mma_study.cu on an H200 (bench/results/): 64 x 64 blocks of eight 32 x 16
// warps, two blocks per SM, was fastest on every shape measured.
using Block = Tile<2, 4, 2, 16, 4, 2>;

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
    return linear ? launch<Block, false>(p, sms, s) : launch<Block, true>(p, sms, s);
}

extern "C" int lvk_ibp_linear_mma(const float *w, const float *bias, uint32_t in_f, uint32_t out_f, uint32_t batch,
                                  const double *lo, const double *hi, double *olo, double *ohi, int relu,
                                  void *stream) {
    const uint32_t shape[15] = {in_f, 1, 1, out_f, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1};
    return lvk_ibp_conv2d_mma(w, bias, shape, batch, lo, hi, olo, ohi, relu, stream);
}
