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

// Programmatic dependent launch (Hopper and newer; no-ops before): a kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization may start while the previous kernel of its
// stream finishes, and must wait for it before touching anything that kernel writes or reads;
// the previous kernel lets it start early.
__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void let_next_grid_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether a device (by default the current one) has compute capability 9.0 or newer: FP64
// tensor cores (mma.sync f64 m16n8k4) and programmatic dependent launch.
inline bool hopper_or_newer(int dev) {
    int major = 0;
    return cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
}

inline bool hopper_or_newer() {
    int dev = 0;
    return cudaGetDevice(&dev) == cudaSuccess && hopper_or_newer(dev);
}

// Launches kernel(args...) on stream s; with `overlap` (Hopper and newer) it may start while
// the stream's previous kernel finishes, so the kernel must call wait_for_previous_grid()
// before touching anything earlier work writes or reads.
template <class... Params, class... Args>
cudaError_t launch_overlapping(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                               bool overlap, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = overlap ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

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

// The explicit rounding-error term of the round-to-nearest centre / radius kernels (the FP64
// tensor-core GEMM and the small-batch GEMV), for n = K + S + 2 (K terms per output, S
// partial sums): gamma = n 2^-51, eta = n 2^-1020 (docs/soundness.md).
struct ErrorTerm {
    double gamma, one_plus_2gamma, eta;
};

inline ErrorTerm error_term(double n) {
    // Exact: n < 2^40, so 1 + 2 gamma is representable.
    return {ldexp(n, -51), 1.0 + 2.0 * ldexp(n, -51), ldexp(n, -1020)};
}

// Centre c = l/2 + u/2 (any value will do) and v = r + gamma |c| with r = max(u - c, c - l),
// all rounded up, so [l, u] lies inside [c - r, c + r].
__device__ __forceinline__ void centre_radius(double l, double u, double gamma, double &c, double &v) {
    c = 0.5 * l + 0.5 * u;
    double r = fmax(__dsub_ru(u, c), __dsub_ru(c, l));
    v = __dadd_ru(r, __dmul_ru(gamma, fabs(c)));
}

// Output box [yc + b - R, yc + b + R] from the round-to-nearest sums yc = fl(W c) and
// g = fl(|W| v), with R = (g + eta)(1 + 2 gamma) rounded up. False when yc or R is not
// finite: the caller then recomputes the output with directed rounding.
__device__ __forceinline__ bool centre_radius_bounds(double yc, double g, double bias, const ErrorTerm &e,
                                                     double &lo, double &hi) {
    double r = __dmul_ru(__dadd_ru(g, e.eta), e.one_plus_2gamma);
    if (!(isfinite(yc) && isfinite(r))) return false;
    lo = __dsub_rd(__dadd_rd(yc, bias), r);
    hi = __dadd_ru(__dadd_ru(yc, bias), r);
    return true;
}

} // namespace lvk_ibp

#endif
