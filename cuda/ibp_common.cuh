// Pieces shared by the IBP kernels (ibp.cu: directed-rounding SIMT kernels; ibp_mma.cu:
// FP64 tensor-core kernels): NaN widening, the convolution shape, and one output element of a
// convolution (or of a linear layer, a 1 x 1 convolution of a 1 x 1 image) computed with
// IEEE directed rounding.
#ifndef LVK_IBP_COMMON_CUH
#define LVK_IBP_COMMON_CUH

#include <cuda_runtime.h>
#include <math_constants.h>
#include <stdint.h>

namespace lvk_ibp {

// A NaN (only from inf - inf or 0 * inf) becomes the widest bound.
__device__ __forceinline__ double fix_lo(double v) { return v != v ? -CUDART_INF : v; }
__device__ __forceinline__ double fix_hi(double v) { return v != v ? CUDART_INF : v; }

// NCHW convolution, weight [cout][cin/groups][kh][kw].
struct ConvShape {
    uint32_t cin, h, w, cout, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, groups;
};

// Lower and upper bound of output channel `co` at (y, x) of batch item `b`, before bias: every
// product of a weight and a bound is one __fma_rd / __fma_ru, so the sums are rigorous
// bounds; zero weights are skipped (0 * inf would be NaN, and they contribute nothing).
__device__ __forceinline__ void conv_element(const ConvShape &c, const float *wt, const double *lo, const double *hi,
                                             uint64_t b, uint32_t co, uint32_t y, uint32_t x, double &out_lo,
                                             double &out_hi) {
    uint32_t cin_g = c.cin / c.groups, cout_g = c.cout / c.groups, g = co / cout_g;
    const double *l = lo + b * (uint64_t)c.cin * c.h * c.w, *u = hi + b * (uint64_t)c.cin * c.h * c.w;
    double acc_lo = 0.0, acc_hi = 0.0;
    for (uint32_t ci = 0; ci < cin_g; ci++) {
        uint32_t cc = g * cin_g + ci;
        for (uint32_t ky = 0; ky < c.kh; ky++) {
            int iy = (int)(y * c.sh + ky * c.dh) - (int)c.ph;
            if (iy < 0 || iy >= (int)c.h) continue;
            for (uint32_t kx = 0; kx < c.kw; kx++) {
                int ix = (int)(x * c.sw + kx * c.dw) - (int)c.pw;
                if (ix < 0 || ix >= (int)c.w) continue;
                double wv = wt[(((uint64_t)co * cin_g + ci) * c.kh + ky) * c.kw + kx];
                if (wv == 0.0) continue;
                uint64_t xi = ((uint64_t)cc * c.h + iy) * c.w + ix;
                bool pos = wv > 0.0;
                acc_lo = __fma_rd(wv, pos ? l[xi] : u[xi], acc_lo);
                acc_hi = __fma_ru(wv, pos ? u[xi] : l[xi], acc_hi);
            }
        }
    }
    out_lo = acc_lo;
    out_hi = acc_hi;
}

} // namespace lvk_ibp

#endif
