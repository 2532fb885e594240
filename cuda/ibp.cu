// Interval bound propagation kernels. Bounds between layers are f64; every operation uses
// IEEE directed rounding (round-down for lower bounds, round-up for upper bounds), so each
// computed bound is a rigorous bound of the exact one with no error bookkeeping: products of
// f32 weights and f64 bounds inside __fma_rd/__fma_ru are rounded once, in the safe direction.
// A NaN (only from inf - inf or 0 * inf) is widened to -inf / +inf at the end of each output.
#include "ibp_common.cuh"
#include "lvk.h"

namespace {

using lvk_ibp::ConvShape;
using lvk_ibp::fix_hi;
using lvk_ibp::fix_lo;

// Box of f32 inputs to f64, checking NaN and lower > upper (first bad index to *bad, which
// holds all ones before). init_flag (a one-block launch only): the block sets *bad itself.
// Each thread loads four elements before converting any, so that their latencies overlap
// (the boxes of a host call are read straight from page-locked host memory).
__global__ void to_f64_kernel(const float *__restrict__ lo, const float *__restrict__ hi, double *__restrict__ dlo,
                              double *__restrict__ dhi, uint64_t n, unsigned long long *bad, bool init_flag) {
    lvk_ibp::let_next_grid_start(); // a following GEMV may start loading its weights
    if (init_flag) {
        if (threadIdx.x == 0) *bad = ~0ull;
        __syncthreads();
    }
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i0 = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i0 < n; i0 += 4 * stride) {
        float l[4], u[4];
#pragma unroll
        for (int t = 0; t < 4; t++) {
            uint64_t i = i0 + t * stride;
            l[t] = i < n ? lo[i] : 0.f;
            u[t] = i < n ? hi[i] : 0.f;
        }
#pragma unroll
        for (int t = 0; t < 4; t++) {
            uint64_t i = i0 + t * stride;
            if (i >= n) break;
            if (!(l[t] <= u[t])) atomicMin(bad, (unsigned long long)i); // NaN or l > u
            dlo[i] = l[t];
            dhi[i] = u[t];
        }
    }
}

// flag_out (nullable; page-locked host memory): receives *guard, so that the host learns
// whether the inputs were valid from the same synchronisation that ends the call, without a
// copy of its own.
__global__ void to_f32_kernel(const double *dlo, const double *dhi, float *lo, float *hi, uint64_t n,
                              const unsigned long long *guard, unsigned long long *flag_out) {
    lvk_ibp::wait_for_previous_grid(); // launched to overlap the last layer's tail
    const unsigned long long first_bad = *guard;
    if (flag_out != nullptr && blockIdx.x == 0 && threadIdx.x == 0) *flag_out = first_bad;
    if (first_bad != ~0ull) return; // a bad input box: the call fails and writes nothing
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
        lo[i] = __double2float_rd(dlo[i]);
        hi[i] = __double2float_ru(dhi[i]);
    }
}

// params: min, max, mean, range (n each). Clip, then (x - mean) / range with range > 0.
__global__ void normalize_kernel(const double *p, uint32_t n, uint64_t total, const double *lo, const double *hi,
                                 double *olo, double *ohi) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < total; i += (uint64_t)gridDim.x * blockDim.x) {
        uint32_t k = i % n;
        double mn = p[k], mx = p[n + k], mean = p[2 * n + k], range = p[3 * n + k];
        double l = fmin(fmax(lo[i], mn), mx), u = fmin(fmax(hi[i], mn), mx);
        olo[i] = __ddiv_rd(__dsub_rd(l, mean), range);
        ohi[i] = __ddiv_ru(__dsub_ru(u, mean), range);
    }
}

// kind: 0 relu, 1 leaky relu (alpha >= 0), 2 sigmoid, 3 tanh, 4 identity (flatten). Sigmoid and tanh are monotone;
// CUDA documents their double-precision error as at most 2 ulp (2^-51 relative); a 2^-40
// margin covers that 2000 times over (docs/soundness.md).
__global__ void activation_kernel(int kind, double alpha, uint64_t n, const double *lo, const double *hi, double *olo,
                                  double *ohi) {
    const double margin = 9.094947017729282e-13; // 2^-40
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
        double l = lo[i], u = hi[i];
        switch (kind) {
            case 0: olo[i] = fmax(l, 0.0); ohi[i] = fmax(u, 0.0); break;
            case 1:
                olo[i] = l >= 0.0 ? l : __dmul_rd(alpha, l);
                ohi[i] = u >= 0.0 ? u : __dmul_ru(alpha, u);
                break;
            case 2: {
                double a = 1.0 / (1.0 + exp(-l)), b = 1.0 / (1.0 + exp(-u));
                olo[i] = fmax(0.0, a - a * margin - 1e-300);
                ohi[i] = fmin(1.0, b + b * margin + 1e-300);
                break;
            }
            case 4: olo[i] = l; ohi[i] = u; break;
            default: {
                double a = tanh(l), b = tanh(u);
                olo[i] = fmax(-1.0, a - fabs(a) * margin - 1e-300);
                ohi[i] = fmin(1.0, b + fabs(b) * margin + 1e-300);
                break;
            }
        }
    }
}

__global__ void add_kernel(uint64_t n, const double *alo, const double *ahi, const double *blo, const double *bhi,
                           double *olo, double *ohi) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
        olo[i] = fix_lo(__dadd_rd(alo[i], blo[i]));
        ohi[i] = fix_hi(__dadd_ru(ahi[i], bhi[i]));
    }
}

// y = W x + b for large batches: a block computes 64 outputs x 64 batch items, each thread a
// 4 x 4 tile of (lower, upper) pairs, over k-slices of 16 staged in shared memory.
constexpr int TO = 64, TB = 64, TK = 16;

__global__ void __launch_bounds__(256) linear_tiled_kernel(const float *w, const float *bias, uint32_t in_f, uint32_t out_f,
                                                           uint32_t batch, const double *lo, const double *hi, double *olo,
                                                           double *ohi, bool relu) {
    __shared__ float ws[TK][TO];
    __shared__ double ls[TK][TB], us[TK][TB];
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    uint32_t o0 = blockIdx.x * TO, b0 = blockIdx.y * TB;
    double acc_lo[4][4], acc_hi[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) { acc_lo[i][j] = 0.0; acc_hi[i][j] = 0.0; }
    for (uint32_t k0 = 0; k0 < in_f; k0 += TK) {
        for (int t = threadIdx.x; t < TO * TK; t += 256) {
            int kk = t % TK, o = t / TK;
            uint32_t go = o0 + o, gk = k0 + kk;
            ws[kk][o] = (go < out_f && gk < in_f) ? w[(uint64_t)go * in_f + gk] : 0.0f;
        }
        for (int t = threadIdx.x; t < TB * TK; t += 256) {
            int kk = t % TK, b = t / TK;
            uint32_t gb = b0 + b, gk = k0 + kk;
            bool ok = gb < batch && gk < in_f;
            ls[kk][b] = ok ? lo[(uint64_t)gb * in_f + gk] : 0.0;
            us[kk][b] = ok ? hi[(uint64_t)gb * in_f + gk] : 0.0;
        }
        __syncthreads();
#pragma unroll 4
        for (int kk = 0; kk < TK; kk++) {
            double wv[4], l[4], u[4];
#pragma unroll
            for (int i = 0; i < 4; i++) wv[i] = ws[kk][ty * 4 + i];
#pragma unroll
            for (int j = 0; j < 4; j++) { l[j] = ls[kk][tx * 4 + j]; u[j] = us[kk][tx * 4 + j]; }
#pragma unroll
            for (int i = 0; i < 4; i++) {
                bool pos = wv[i] > 0.0;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    acc_lo[i][j] = __fma_rd(wv[i], pos ? l[j] : u[j], acc_lo[i][j]);
                    acc_hi[i][j] = __fma_ru(wv[i], pos ? u[j] : l[j], acc_hi[i][j]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t o = o0 + ty * 4 + i;
        if (o >= out_f) continue;
        double bv = bias != nullptr ? (double)bias[o] : 0.0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t b = b0 + tx * 4 + j;
            if (b >= batch) continue;
            double l = fix_lo(__dadd_rd(acc_lo[i][j], bv)), u = fix_hi(__dadd_ru(acc_hi[i][j], bv));
            if (relu) { l = fmax(l, 0.0); u = fmax(u, 0.0); }
            olo[(uint64_t)b * out_f + o] = l;
            ohi[(uint64_t)b * out_f + o] = u;
        }
    }
}

// Direct 2-D convolution (GPUs without FP64 tensor cores): one thread per output element of
// one batch item, directed-rounding FMAs as in the linear kernels.
__global__ void conv2d_kernel(const float *wt, const float *bias, ConvShape c, uint32_t batch, const double *lo,
                              const double *hi, double *olo, double *ohi, bool relu) {
    uint64_t n_out = (uint64_t)c.cout * c.oh * c.ow;
    uint64_t total = n_out * batch;
    for (uint64_t idx = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; idx < total; idx += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t b = idx / n_out, r = idx % n_out;
        uint32_t co = r / (c.oh * c.ow), y = (r / c.ow) % c.oh, x = r % c.ow;
        double acc_lo, acc_hi;
        lvk_ibp::conv_element(c, wt, lo, hi, b, co, y, x, acc_lo, acc_hi);
        if (bias != nullptr) {
            acc_lo = __dadd_rd(acc_lo, (double)bias[co]);
            acc_hi = __dadd_ru(acc_hi, (double)bias[co]);
        }
        acc_lo = fix_lo(acc_lo);
        acc_hi = fix_hi(acc_hi);
        if (relu) { acc_lo = fmax(acc_lo, 0.0); acc_hi = fmax(acc_hi, 0.0); } // fused ReLU: exact
        olo[idx] = acc_lo;
        ohi[idx] = acc_hi;
    }
}

// Pooling over [C, H, W]: max (padding ignored) or average (divides by the full window,
// count_include_pad, with directed rounding).
__global__ void pool_kernel(bool is_max, uint32_t c, uint32_t h, uint32_t w, uint32_t oh, uint32_t ow, uint32_t kh,
                            uint32_t kw, uint32_t sh, uint32_t sw, uint32_t ph, uint32_t pw, uint32_t batch,
                            const double *lo, const double *hi, double *olo, double *ohi) {
    uint64_t n_out = (uint64_t)c * oh * ow, total = n_out * batch;
    for (uint64_t idx = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; idx < total; idx += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t b = idx / n_out, r = idx % n_out;
        uint32_t ch = r / (oh * ow), y = (r / ow) % oh, x = r % ow;
        const double *l = lo + b * (uint64_t)c * h * w, *u = hi + b * (uint64_t)c * h * w;
        double a = is_max ? -CUDART_INF : 0.0, z = is_max ? -CUDART_INF : 0.0;
        for (uint32_t ky = 0; ky < kh; ky++) {
            int iy = (int)(y * sh + ky) - (int)ph;
            if (iy < 0 || iy >= (int)h) continue;
            for (uint32_t kx = 0; kx < kw; kx++) {
                int ix = (int)(x * sw + kx) - (int)pw;
                if (ix < 0 || ix >= (int)w) continue;
                uint64_t i = ((uint64_t)ch * h + iy) * w + ix;
                if (is_max) { a = fmax(a, l[i]); z = fmax(z, u[i]); }
                else { a = __dadd_rd(a, l[i]); z = __dadd_ru(z, u[i]); }
            }
        }
        if (!is_max) {
            double count = (double)kh * kw;
            a = __ddiv_rd(a, count);
            z = __ddiv_ru(z, count);
        }
        olo[idx] = fix_lo(a);
        ohi[idx] = fix_hi(z);
    }
}

// Inference batch norm per channel: y = a·(x − mean) + beta, a = gamma / sqrt(var + eps).
// `a` is enclosed in [a_lo, a_hi] with directed sqrt and division, x − mean in [t_lo, t_hi];
// their product interval takes the min / max of the four corner products, rounded outward.
__global__ void batchnorm_kernel(const float *p, double eps, uint32_t channels, uint32_t per_channel, uint32_t batch,
                                 const double *lo, const double *hi, double *olo, double *ohi) {
    uint64_t n = (uint64_t)channels * per_channel, total = n * batch;
    for (uint64_t idx = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; idx < total; idx += (uint64_t)gridDim.x * blockDim.x) {
        uint32_t ch = (idx % n) / per_channel;
        double gamma = p[ch], beta = p[channels + ch], mean = p[2 * channels + ch], var = p[3 * channels + ch];
        double s_lo = __dsqrt_rd(__dadd_rd(var, eps)), s_hi = __dsqrt_ru(__dadd_ru(var, eps));
        double a_lo = gamma >= 0.0 ? __ddiv_rd(gamma, s_hi) : __ddiv_rd(gamma, s_lo);
        double a_hi = gamma >= 0.0 ? __ddiv_ru(gamma, s_lo) : __ddiv_ru(gamma, s_hi);
        double t_lo = __dsub_rd(lo[idx], mean), t_hi = __dsub_ru(hi[idx], mean);
        double p1 = __dmul_rd(a_lo, t_lo), p2 = __dmul_rd(a_lo, t_hi), p3 = __dmul_rd(a_hi, t_lo), p4 = __dmul_rd(a_hi, t_hi);
        double q1 = __dmul_ru(a_lo, t_lo), q2 = __dmul_ru(a_lo, t_hi), q3 = __dmul_ru(a_hi, t_lo), q4 = __dmul_ru(a_hi, t_hi);
        olo[idx] = fix_lo(__dadd_rd(fmin(fmin(p1, p2), fmin(p3, p4)), beta));
        ohi[idx] = fix_hi(__dadd_ru(fmax(fmax(q1, q2), fmax(q3, q4)), beta));
    }
}

// Whether the current device has FP64 tensor cores (compute capability 9.0 or newer).
unsigned grid_for(uint64_t n) {
    uint64_t g = (n + 255) / 256;
    return g > 65535 ? 65535u : (g == 0 ? 1u : static_cast<unsigned>(g));
}

} // namespace

extern "C" int lvk_ibp_to_f64(const float *lo, const float *hi, double *dlo, double *dhi, uint64_t n,
                              unsigned long long *first_bad, void *stream) {
    if (lo == nullptr || hi == nullptr || dlo == nullptr || dhi == nullptr || first_bad == nullptr) return cudaErrorInvalidValue;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    // Small inputs (batch-1 calls): one block sets the flag itself, saving the memset's launch.
    if (n <= 16384) {
        to_f64_kernel<<<1, 1024, 0, s>>>(lo, hi, dlo, dhi, n, first_bad, true);
        return cudaGetLastError();
    }
    cudaError_t e = cudaMemsetAsync(first_bad, 0xff, sizeof *first_bad, s);
    if (e != cudaSuccess) return e;
    to_f64_kernel<<<grid_for(n), 256, 0, s>>>(lo, hi, dlo, dhi, n, first_bad, false);
    return cudaGetLastError();
}

extern "C" int lvk_ibp_to_f32(const double *dlo, const double *dhi, float *lo, float *hi, uint64_t n,
                              const unsigned long long *guard, unsigned long long *flag_out, void *stream) {
    if (lo == nullptr || hi == nullptr || dlo == nullptr || dhi == nullptr || guard == nullptr) return cudaErrorInvalidValue;
    // Overlaps the last layer's tail (the kernel waits for it first).
    return lvk_ibp::launch_overlapping(to_f32_kernel, dim3(grid_for(n)), dim3(256), 0, static_cast<cudaStream_t>(stream),
                                       lvk_ibp::hopper_or_newer(), dlo, dhi, lo, hi, n, guard, flag_out);
}

extern "C" int lvk_ibp_normalize(const double *params, uint32_t n, uint64_t total, const double *lo, const double *hi,
                                 double *olo, double *ohi, void *stream) {
    if (params == nullptr || n == 0) return cudaErrorInvalidValue;
    normalize_kernel<<<grid_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(params, n, total, lo, hi, olo, ohi);
    return cudaGetLastError();
}

extern "C" int lvk_ibp_activation(int kind, double alpha, uint64_t n, const double *lo, const double *hi, double *olo,
                                  double *ohi, void *stream) {
    if (kind < 0 || kind > 4) return cudaErrorInvalidValue;
    activation_kernel<<<grid_for(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(kind, alpha, n, lo, hi, olo, ohi);
    return cudaGetLastError();
}

extern "C" int lvk_ibp_add(uint64_t n, const double *alo, const double *ahi, const double *blo, const double *bhi,
                           double *olo, double *ohi, void *stream) {
    add_kernel<<<grid_for(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(n, alo, ahi, blo, bhi, olo, ohi);
    return cudaGetLastError();
}

extern "C" int lvk_ibp_linear(const float *w, const float *bias, uint32_t in_f, uint32_t out_f, uint32_t batch,
                              const double *lo, const double *hi, double *olo, double *ohi, int relu,
                              int tensor_cores, void *stream) {
    if (w == nullptr || lo == nullptr || hi == nullptr || olo == nullptr || ohi == nullptr) return cudaErrorInvalidValue;
    if (in_f == 0 || out_f == 0 || batch == 0) return cudaErrorInvalidValue;
    // Batches of up to 8 are weight-bandwidth bound: the GEMV kernel (ibp_gemv.cu) suits them.
    if (tensor_cores && batch > 8 && lvk_ibp::hopper_or_newer())
        return lvk_ibp_linear_mma(w, bias, in_f, out_f, batch, lo, hi, olo, ohi, relu, stream);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (batch <= 8) return lvk_ibp_linear_gemv(w, bias, in_f, out_f, batch, lo, hi, olo, ohi, relu, stream);
    dim3 grid((out_f + TO - 1) / TO, (batch + TB - 1) / TB);
    if (grid.y > 65535) return cudaErrorInvalidValue;
    linear_tiled_kernel<<<grid, 256, 0, s>>>(w, bias, in_f, out_f, batch, lo, hi, olo, ohi, relu != 0);
    return cudaGetLastError();
}

extern "C" int lvk_ibp_conv2d(const float *w, const float *bias, const uint32_t shape[15], uint32_t batch,
                              const double *lo, const double *hi, double *olo, double *ohi, int relu,
                              int tensor_cores, void *stream) {
    if (w == nullptr || shape == nullptr || lo == nullptr || hi == nullptr || olo == nullptr || ohi == nullptr) return cudaErrorInvalidValue;
    if (tensor_cores && lvk_ibp::hopper_or_newer()) return lvk_ibp_conv2d_mma(w, bias, shape, batch, lo, hi, olo, ohi, relu, stream);
    ConvShape c = {shape[0], shape[1], shape[2], shape[3], shape[4], shape[5], shape[6], shape[7],
                   shape[8], shape[9], shape[10], shape[11], shape[12], shape[13], shape[14]};
    if (c.groups == 0 || c.cin % c.groups || c.cout % c.groups) return cudaErrorInvalidValue;
    uint64_t total = (uint64_t)c.cout * c.oh * c.ow * batch;
    conv2d_kernel<<<grid_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(w, bias, c, batch, lo, hi, olo, ohi,
                                                                                    relu != 0);
    return cudaGetLastError();
}

extern "C" int lvk_ibp_pool(int is_max, const uint32_t shape[11], uint32_t batch, const double *lo, const double *hi,
                            double *olo, double *ohi, void *stream) {
    if (shape == nullptr || lo == nullptr || hi == nullptr || olo == nullptr || ohi == nullptr) return cudaErrorInvalidValue;
    uint64_t total = (uint64_t)shape[0] * shape[3] * shape[4] * batch;
    pool_kernel<<<grid_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(
        is_max != 0, shape[0], shape[1], shape[2], shape[3], shape[4], shape[5], shape[6], shape[7], shape[8], shape[9],
        shape[10], batch, lo, hi, olo, ohi);
    return cudaGetLastError();
}

extern "C" int lvk_ibp_batchnorm(const float *params, double eps, uint32_t channels, uint32_t per_channel, uint32_t batch,
                                 const double *lo, const double *hi, double *olo, double *ohi, void *stream) {
    if (params == nullptr || channels == 0 || !(eps > 0.0)) return cudaErrorInvalidValue;
    uint64_t total = (uint64_t)channels * per_channel * batch;
    batchnorm_kernel<<<grid_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(params, eps, channels, per_channel,
                                                                                       batch, lo, hi, olo, ohi);
    return cudaGetLastError();
}
