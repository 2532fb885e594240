// The register-staged FP64 tensor-core GEMM (included by ibp_mma.cu; same Gemm, finish and
// run_gemm): pixels or batch items on the mma's M side, weights on the N side, each stage
// loaded into registers (weights converted to f64 there) while the previous one is multiplied,
// two shared-memory stages. It beats the cp.async kernel where K is small or the rows are
// gathered (convolutions with more than 32 output channels, narrow layers such as ACAS Xu's):
// bench/ibp_mma_study.cu has the measurements.
#pragma once
namespace {
// Block shape: WARPS_M x WARPS_N warps, each 32 rows x NT * 8 columns; BK k per shared-memory
// stage; MK the k of the mma shape; MIN_BLOCKS resident blocks per SM (register budget).
#pragma nv_diag_suppress 177 // members unused where the kernel body is compiled out (below sm_90)
template <int WARPS_M_, int WARPS_N_, int NT_, int BK_, int MK_, int MIN_BLOCKS_> struct StagedTile {
    static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, NT = NT_, BK = BK_, MK = MK_;
    static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
    static constexpr int BM = WARPS_M * 32, BN = WARPS_N * NT * 8, T = WARPS_M * WARPS_N * 32;
    // Row stride in doubles: = 4 (mod 16) makes the fragment loads free of bank conflicts.
    static constexpr int LDK = BK + 4;
    static_assert(LDK % 16 == 4, "conflict-free stride");
};
#pragma nv_diag_default 177

template <bool PRE> __device__ __forceinline__ void load_centre_radius(const Gemm &p, uint64_t i, double &c, double &v) {
    if (PRE) {
        c = __ldg(p.xc + i);
        v = __ldg(p.xv + i);
    } else {
        lvk_ibp::centre_radius(__ldg(p.lo + i), __ldg(p.hi + i), p.err.gamma, c, v);
    }
}

// One block: a BM x BN tile of one group and one k-split.
// PRE: centres and radii precomputed by a pass before the kernel (p.xc, p.xv); otherwise each
// load computes them from the input box (p.lo, p.hi), which saves that pass where each input
// value is loaded by few blocks.
template <class Cfg, bool CONV, bool PRE>
__global__ void __launch_bounds__(Cfg::T, Cfg::MIN_BLOCKS) staged_kernel(Gemm p) {
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
    const BlockPos bp = block_pos(p, BM, BN);
    const uint32_t m0 = bp.m0, n0 = bp.n0, split = bp.split, g = bp.g, k_end = bp.k_end;
    const uint32_t k_begin = bp.k_begin, kk_t = tid % BK;
    if (CONV) conv_rows(p, m0, g, BM, rows);

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
        const KOffset ko = CONV && kv ? conv_k(p, k) : KOffset{0, 0, 0};
#pragma unroll
        for (int i = 0; i < A_PER; i++) {
            uint32_t r = tid / BK + i * (T / BK), m = m0 + r;
            double c = 0.0, v = 0.0; // padding and out-of-range: the point 0
            if (CONV) {
                RowInfo ri = rows[r];
                if (kv && conv_inside(p, ri, ko)) load_centre_radius<PRE>(p, (uint64_t)(ri.base + ko.off), c, v);
            } else if (kv && m < p.M) {
                load_centre_radius<PRE>(p, (uint64_t)m * p.K + k, c, v);
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
                if (m < p.M && n < p.N) store_result(p, out_pos(p, m, n, g), split, acc_c[i][j][e], acc_g[i][j][e]);
            }
#endif
}

template <class Cfg, bool CONV, bool PRE> int launch_staged(Gemm &p, int sms, cudaStream_t s) {
    constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK;
    auto kernel = staged_kernel<Cfg, CONV, PRE>;
    size_t smem = (size_t)2 * (2 * BM + BN) * Cfg::LDK * sizeof(double) + BM * sizeof(RowInfo);
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    uint64_t tiles = (uint64_t)((p.M + BM - 1) / BM) * ((p.N + BN - 1) / BN);
    return run_gemm(p, sms, s, tiles, BK, 2, PRE, [&](Gemm &q, uint32_t splits) {
        kernel<<<dim3((unsigned)tiles, splits, q.c.groups), Cfg::T, smem, s>>>(q);
        return (int)cudaGetLastError();
    });
}

} // namespace
