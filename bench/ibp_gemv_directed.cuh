// The directed-rounding GEMV of session 2 (formerly cuda/ibp.cu), kept as the study's baseline
// for the centre / radius GEMV that replaced it (cuda/ibp_gemv.cu).
#pragma once
namespace {
using lvk_ibp::fix_hi;
using lvk_ibp::fix_lo;
// y = W x + b for small batches: one warp per output row reads the row once (the weights are
// the traffic), the batch's input boxes are staged in shared memory once per block of WARPS
// rows: wide inputs (costly to stage) want many rows per block, narrow ones more blocks.

template <int WARPS>
__global__ void __launch_bounds__(WARPS * 32) linear_gemv_kernel(const float *w, const float *bias, uint32_t in_f,
                                                                      uint32_t out_f, uint32_t batch, const double *lo,
                                                                      const double *hi, double *olo, double *ohi,
                                                                      bool staged, bool relu) {
    extern __shared__ double sx[]; // [batch][in_f] lower, then upper
    const double *xl = lo, *xh = hi;
    if (staged) {
        uint32_t n = batch * in_f;
        for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) { sx[i] = lo[i]; sx[n + i] = hi[i]; }
        __syncthreads();
        xl = sx;
        xh = sx + n;
    }
    uint32_t lane = threadIdx.x & 31;
    uint32_t row = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (row >= out_f) return;
    const float *wr = w + (uint64_t)row * in_f;
    for (uint32_t b = 0; b < batch; b++) {
        const double *l = xl + (uint64_t)b * in_f, *u = xh + (uint64_t)b * in_f;
        double acc_lo = 0.0, acc_hi = 0.0;
        // Each lane takes 4 consecutive weights (one 16-byte load; a warp reads 512 contiguous
        // bytes of the row) and the matching 4 lower and 4 upper bounds as 16-byte double2
        // loads, so shared-memory reads are contiguous per lane, without bank conflicts.
        bool vec = (in_f % 4 == 0) && ((reinterpret_cast<uintptr_t>(wr) & 15) == 0) &&
                   ((reinterpret_cast<uintptr_t>(l) & 15) == 0) && ((reinterpret_cast<uintptr_t>(u) & 15) == 0);
        if (vec) {
            const float4 *w4 = reinterpret_cast<const float4 *>(wr);
            const double2 *l2 = reinterpret_cast<const double2 *>(l), *u2 = reinterpret_cast<const double2 *>(u);
#pragma unroll 4
            for (uint32_t j4 = lane; j4 < in_f / 4; j4 += 32) {
                float4 q = __ldg(w4 + j4);
                double2 la = l2[2 * j4], lb = l2[2 * j4 + 1], ua = u2[2 * j4], ub = u2[2 * j4 + 1];
                double ws[4] = {q.x, q.y, q.z, q.w};
                double ls[4] = {la.x, la.y, lb.x, lb.y}, us[4] = {ua.x, ua.y, ub.x, ub.y};
#pragma unroll
                for (int t = 0; t < 4; t++) {
                    double wv = ws[t];
                    if (wv != 0.0) {
                        bool pos = wv > 0.0;
                        acc_lo = __fma_rd(wv, pos ? ls[t] : us[t], acc_lo);
                        acc_hi = __fma_ru(wv, pos ? us[t] : ls[t], acc_hi);
                    }
                }
            }
        } else {
            for (uint32_t j = lane; j < in_f; j += 32) {
                double wv = __ldg(wr + j);
                if (wv != 0.0) {
                    bool pos = wv > 0.0;
                    acc_lo = __fma_rd(wv, pos ? l[j] : u[j], acc_lo);
                    acc_hi = __fma_ru(wv, pos ? u[j] : l[j], acc_hi);
                }
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            acc_lo = __dadd_rd(acc_lo, __shfl_down_sync(0xffffffffu, acc_lo, off));
            acc_hi = __dadd_ru(acc_hi, __shfl_down_sync(0xffffffffu, acc_hi, off));
        }
        if (lane == 0) {
            if (bias != nullptr) {
                acc_lo = __dadd_rd(acc_lo, (double)bias[row]);
                acc_hi = __dadd_ru(acc_hi, (double)bias[row]);
            }
            acc_lo = fix_lo(acc_lo);
            acc_hi = fix_hi(acc_hi);
            if (relu) { acc_lo = fmax(acc_lo, 0.0); acc_hi = fmax(acc_hi, 0.0); } // fused ReLU: exact
            olo[(uint64_t)b * out_f + row] = acc_lo;
            ohi[(uint64_t)b * out_f + row] = acc_hi;
        }
    }
}

} // namespace
