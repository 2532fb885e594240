// Design study for the IBP kernels (built and run on the GPU machine by scripts/gpu-run.sh):
//  1. FP64 tensor-core peak of each mma.sync f64 shape (register-only loops);
//  2. the sound centre / radius tensor-core linear kernel (cuda/ibp_mma.cu) with each mma
//     shape, against the directed-rounding SIMT kernel (cuda/ibp.cu) on the same boxes: time,
//     agreement, and enclosure of a long-double reference at sampled outputs;
//  3. the same for a CIFAR-style convolution;
//  4. the batch-1 GEMV chain of an 8 x 4096 MLP, kernels only, against the copy floor (a
//     streaming-ring variant and a register-resident-input variant were slower: results in
//     bench/results/gpu-h200-2026-11-22b/study-run*.md).
// Output: markdown on stdout.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <utility>
#include <vector>

#define LVK_IBP_MMA_STUDY
#include "../cuda/ibp.cu"
#include "../cuda/ibp_gemv.cu"
#include "../cuda/ibp_mma.cu"
#include "../cuda/vram_ops.cu"
#include "ibp_gemv_directed.cuh"

#define CK(x)                                                                                     \
    do {                                                                                          \
        cudaError_t e_ = (x);                                                                     \
        if (e_ != cudaSuccess) {                                                                  \
            printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);       \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

template <int MK> __global__ void peak_kernel(double *out, int iters) {
    double a[MK / 2], b[MK / 4], d[6][4];
    for (int i = 0; i < MK / 2; i++) a[i] = 1.0 + threadIdx.x * 1e-9 + i;
    for (int i = 0; i < MK / 4; i++) b[i] = 0.5 - threadIdx.x * 1e-9 + i;
    for (int j = 0; j < 6; j++)
        for (int e = 0; e < 4; e++) d[j][e] = 0.0;
    for (int it = 0; it < iters; it++)
#pragma unroll
        for (int j = 0; j < 6; j++) mma<MK>(d[j], a, b);
    double s = 0;
    for (int j = 0; j < 6; j++)
        for (int e = 0; e < 4; e++) s += d[j][e];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

// Median of `reps` timings of f() on stream s (events on s; programmatic dependent launch
// needs a stream of its own, not the legacy default stream).
struct Timer {
    cudaEvent_t a, b;
    cudaStream_t s = nullptr;
    Timer() { CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b)); }
    template <class F> double ms(F f, int reps) {
        f();
        CK(cudaDeviceSynchronize());
        std::vector<float> v;
        for (int r = 0; r < reps; r++) {
            CK(cudaEventRecord(a, s));
            f();
            CK(cudaEventRecord(b, s));
            CK(cudaEventSynchronize(b));
            float t;
            CK(cudaEventElapsedTime(&t, a, b));
            v.push_back(t);
        }
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    }
};

static uint64_t rng = 88172645463325252ull;
static double unit() {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

template <class T> T *dev(const std::vector<T> &h) {
    T *p;
    CK(cudaMalloc(&p, h.size() * sizeof(T)));
    CK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return p;
}
template <class T> std::vector<T> host(const T *p, size_t n) {
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}

// Largest |a - b| over the outputs, relative to the width (or 1e-9 of the magnitude for
// point-like boxes).
static void compare(const char *what, const std::vector<double> &al, const std::vector<double> &ah,
                    const std::vector<double> &bl, const std::vector<double> &bh) {
    double worst = 0;
    for (size_t i = 0; i < al.size(); i++) {
        double w = std::max(bh[i] - bl[i], 1e-9 * std::max(std::fabs(bl[i]), std::fabs(bh[i])) + 1e-300);
        worst = std::max(worst, std::max(std::fabs(al[i] - bl[i]), std::fabs(ah[i] - bh[i])) / w);
    }
    printf("| %s | agreement with SIMT: max |diff| / width = %.2e |\n", what, worst);
}

static int linear_case(uint32_t M, uint32_t N, uint32_t K, int sms, Timer &t) {
    std::vector<float> w((size_t)N * K), bias(N);
    std::vector<double> lo((size_t)M * K), hi((size_t)M * K);
    for (auto &x : w) x = (float)(unit() / std::sqrt((double)K));
    for (auto &x : bias) x = (float)(0.1 * unit());
    for (size_t i = 0; i < lo.size(); i++) {
        double c = unit(), r = 0.01 * std::fabs(unit());
        lo[i] = c - r;
        hi[i] = c + r;
    }
    float *dw = dev(w), *db = dev(bias);
    double *dl = dev(lo), *dh = dev(hi), *ol, *oh, *sl, *sh;
    size_t n_out = (size_t)M * N;
    CK(cudaMalloc(&ol, n_out * 8)); CK(cudaMalloc(&oh, n_out * 8));
    CK(cudaMalloc(&sl, n_out * 8)); CK(cudaMalloc(&sh, n_out * 8));
    double flop = 2.0 * 2.0 * M * (double)N * K; // two products (centre, radius)
    double simt = t.ms([&] { CK((cudaError_t)lvk_ibp_linear(dw, db, K, N, M, dl, dh, sl, sh, 0, 0, nullptr)); }, 5);
    auto rl = host(sl, n_out), rh = host(sh, n_out);
    printf("| linear M=%u N=%u K=%u | SIMT directed rounding | %.3f ms | %.1f TFLOP/s |\n", M, N, K, simt, flop / simt / 1e9);
    int bad = 0;
    auto run = [&](auto launcher, const char *name) {
        Gemm p = {};
        p.c = {K, 1, 1, N, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1};
        p.w = dw; p.bias = db; p.lo = dl; p.hi = dh; p.olo = ol; p.ohi = oh;
        p.M = M; p.N = N; p.K = K; p.total = n_out;
        double ms = t.ms([&] { Gemm q = p; CK((cudaError_t)launcher(q, sms, nullptr)); }, 10);
        auto gl = host(ol, n_out), gh = host(oh, n_out);
        printf("| linear M=%u N=%u K=%u | tensor cores %s | %.3f ms | %.1f TFLOP/s |\n", M, N, K, name, ms, flop / ms / 1e9);
        compare(name, gl, gh, rl, rh);
        // Enclosure of a long-double reference at 200 sampled outputs.
        for (int s = 0; s < 200; s++) {
            size_t m = (size_t)(std::fabs(unit()) * M) % M, n = (size_t)(std::fabs(unit()) * N) % N;
            long double lo_ref = bias[n], hi_ref = bias[n];
            for (size_t k = 0; k < K; k++) {
                long double wv = w[n * K + k];
                lo_ref += wv > 0 ? wv * lo[m * K + k] : wv * hi[m * K + k];
                hi_ref += wv > 0 ? wv * hi[m * K + k] : wv * lo[m * K + k];
            }
            long double slack = 1e-15L * (std::fabs((double)lo_ref) + std::fabs((double)hi_ref) + 1); // long double's own error
            if ((long double)gl[m * N + n] > lo_ref + slack || (long double)gh[m * N + n] < hi_ref - slack) bad++;
        }
    };
    // Session 2's kernel: TileV1<warps m, warps n, 8-column tiles per warp, k per stage, mma k, blocks per SM>
    run(launch_staged<StagedTile<2, 4, 2, 16, 4, 2>, false, true>, "staged: items on M, 64x64 warp 32x16 BK16, 2 blocks/SM, centres precomputed (session 2)");
    run(launch_staged<StagedTile<2, 4, 2, 16, 4, 2>, false, false>, "staged, centres computed in the loads");
    // Tile<warps f, warps b, 16-feature tiles per warp, 8-item tiles per warp, k per stage, stages, blocks per SM>
    run(launch_async<Tile<2, 4, 4, 2, 32, 3, 1>, false>, "async: 128f x 64b, warp 64x16, BK32, 3 stages");
    run(launch_async<Tile<4, 2, 2, 2, 32, 3, 2>, false>, "async: 128f x 32b, warp 32x16, BK32, 3 stages, 2 blocks/SM");
    run(launch_async<Tile<2, 4, 4, 2, 16, 4, 1>, false>, "async: 128f x 64b, warp 64x16, BK16, 4 stages");
    run(launch_async<Tile<2, 2, 4, 2, 32, 3, 2>, false>, "async: 128f x 32b, warp 64x16, 4 warps, BK32, 3 stages, 2 blocks/SM");
    run(launch_for<false>, "as chosen for this shape");
    printf("| linear M=%u N=%u K=%u | sampled outputs not enclosing the long-double reference: %d |\n", M, N, K, bad);
    if (M == 1024 && N == 4096 && N == K) {
        // Eight chained layers with ReLU (the 8 x 4096 MLP at batch 1024, kernels only), to
        // tell the library's overhead from the GPU's behaviour over a longer run.
        double chain = t.ms([&] {
            for (int k = 0; k < 8; k++) {
                Gemm q = {};
                q.c = {K, 1, 1, N, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1};
                q.w = dw; q.bias = db; q.lo = k & 1 ? ol : dl; q.hi = k & 1 ? oh : dh;
                q.olo = k & 1 ? dl : ol; q.ohi = k & 1 ? dh : oh; q.relu = 1;
                q.M = M; q.N = N; q.K = K; q.total = n_out;
                CK((cudaError_t)launch_for<false>(q, sms, nullptr));
            }
        }, 5);
        printf("| linear M=%u N=%u K=%u | 8 chained layers with ReLU, as chosen | %.3f ms | %.1f TFLOP/s |\n", M, N, K,
               chain, 8 * flop / chain / 1e9);
    }
    for (void *p : {(void *)dw, (void *)db, (void *)dl, (void *)dh, (void *)ol, (void *)oh, (void *)sl, (void *)sh}) CK(cudaFree(p));
    return bad;
}

// A CIFAR-style convolution, 3 x 3, stride 2, pad 1: cin x h x h -> cout x h/2 x h/2.
static int conv_case(uint32_t cin, uint32_t cout, uint32_t h, uint32_t batch, int sms, Timer &t) {
    uint32_t side = h / 2;
    uint32_t shape[15] = {cin, h, h, cout, side, side, 3, 3, 2, 2, 1, 1, 1, 1, 1};
    size_t n_in = (size_t)batch * cin * h * h, n_out = (size_t)batch * cout * side * side;
    std::vector<float> w(cout * cin * 9), bias(cout);
    for (auto &x : w) x = (float)(0.1 * unit());
    for (auto &x : bias) x = (float)(0.1 * unit());
    std::vector<double> lo(n_in), hi(n_in);
    for (size_t i = 0; i < n_in; i++) {
        double c = unit(), r = 0.01 * std::fabs(unit());
        lo[i] = c - r;
        hi[i] = c + r;
    }
    float *dw = dev(w), *db = dev(bias);
    double *dl = dev(lo), *dh = dev(hi), *ol, *oh, *sl, *sh;
    CK(cudaMalloc(&ol, n_out * 8)); CK(cudaMalloc(&oh, n_out * 8));
    CK(cudaMalloc(&sl, n_out * 8)); CK(cudaMalloc(&sh, n_out * 8));
    double flop = 2.0 * 2.0 * n_out * cin * 9;
    double simt = t.ms([&] { CK((cudaError_t)lvk_ibp_conv2d(dw, db, shape, batch, dl, dh, sl, sh, 1, 0, nullptr)); }, 5);
    printf("| conv %u->%u 3x3 s2 b%u | SIMT directed rounding | %.3f ms | %.1f TFLOP/s |\n", cin, cout, batch, simt, flop / simt / 1e9);
    auto sl_h = host(sl, n_out), sh_h = host(sh, n_out);
    auto run = [&](auto launcher, const char *name) {
        Gemm p = {};
        p.c = {cin, h, h, cout, side, side, 3, 3, 2, 2, 1, 1, 1, 1, 1};
        p.w = dw; p.bias = db; p.lo = dl; p.hi = dh; p.olo = ol; p.ohi = oh; p.relu = 1;
        p.M = batch * side * side; p.N = cout; p.K = cin * 9; p.total = n_out;
        double ms = t.ms([&] { Gemm q = p; CK((cudaError_t)launcher(q, sms, nullptr)); }, 10);
        printf("| conv %u->%u 3x3 s2 b%u | tensor cores %s | %.3f ms | %.1f TFLOP/s |\n", cin, cout, batch, name, ms, flop / ms / 1e9);
        compare(name, host(ol, n_out), host(oh, n_out), sl_h, sh_h);
    };
    run(launch_staged<StagedTile<2, 4, 2, 16, 4, 2>, true, true>, "staged: 64x64 warp 32x16 BK16, 2 blocks/SM, centres precomputed");
    run(launch_staged<StagedTile<2, 4, 2, 16, 4, 2>, true, false>, "staged, centres computed in the loads");
    run(launch_async<Tile<1, 4, 2, 2, 16, 3, 2>, true>, "async: 32f x 64b, warp 32x16, BK16, 3 stages, 2 blocks/SM");
    run(launch_async<Tile<1, 4, 4, 2, 16, 3, 2>, true>, "async: 64f x 64b, warp 64x16, BK16, 3 stages, 2 blocks/SM");
    run(launch_for<true>, "as chosen for this width");
    for (void *p : {(void *)dw, (void *)db, (void *)dl, (void *)dh, (void *)ol, (void *)oh, (void *)sl, (void *)sh}) CK(cudaFree(p));
    return 0;
}

// Reads each row once with 16-byte loads and sums it in f32: the rate the memory system gives
// this access pattern when the arithmetic costs nothing.
__global__ void __launch_bounds__(512) stream_probe(const float *w, uint32_t n, float *out) {
    const uint32_t lane = threadIdx.x & 31, row = blockIdx.x * 16 + (threadIdx.x >> 5);
    const float4 *w4 = reinterpret_cast<const float4 *>(w + (uint64_t)row * n);
    float s = 0.f;
#pragma unroll 8
    for (uint32_t j = lane; j < n / 4; j += 32) {
        float4 q = __ldg(w4 + j);
        s += (q.x + q.y) + (q.z + q.w);
    }
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) out[row] = s;
}

// Batch 1 on an 8 x 4096 MLP, kernels only: session 2's directed-rounding GEMV against the
// centre / radius GEMV (cuda/ibp_gemv.cu, overlapping layers on Hopper), agreement of the two
// and enclosure of a long-double reference at sampled rows; then the copy floor.
static int gemv_chain(Timer &t) {
    const uint32_t n = 4096, layers = 8;
    std::vector<float> w((size_t)n * n);
    for (auto &x : w) x = (float)(unit() / 64.0);
    std::vector<float *> dw(layers);
    for (auto &p : dw) p = dev(w);
    std::vector<double> xl_h(n), xh_h(n);
    for (uint32_t i = 0; i < n; i++) {
        double c = unit(), r = 0.01 * std::fabs(unit());
        xl_h[i] = c - r;
        xh_h[i] = c + r;
    }
    double *l = dev(xl_h), *h = dev(xh_h), *al, *ah;
    CK(cudaMalloc(&al, n * 8 * 2)); CK(cudaMalloc(&ah, n * 8 * 2));
    auto report = [&](const char *name, auto layer) {
        double one = t.ms([&] { CK((cudaError_t)layer(dw[0], l, h, al, ah)); }, 20);
        auto ol = host(al, n), oh = host(ah, n);
        double chain = t.ms([&] {
            for (uint32_t k = 0; k < layers; k++)
                CK((cudaError_t)layer(dw[k], k ? al + ((k - 1) & 1) * n : l, k ? ah + ((k - 1) & 1) * n : h, al + (k & 1) * n,
                                      ah + (k & 1) * n));
        }, 20);
        printf("| GEMV 4096x4096 b1, %s | one layer %.4f ms | 8 layers (kernels only) %.4f ms |\n", name, one, chain);
        return std::make_pair(ol, oh);
    };
    auto v1 = report("directed rounding, 32 warps per block, one row per warp (session 2)", [&](const float *w, const double *xl, const double *xh, double *yl, double *yh) {
        size_t smem = (size_t)n * 16;
        CK(cudaFuncSetAttribute(linear_gemv_kernel<32>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        linear_gemv_kernel<32><<<n / 32, 1024, smem, t.s>>>(w, nullptr, n, n, 1, xl, xh, yl, yh, true, false);
        return cudaGetLastError();
    });
    // The centre / radius variants, timed in alternating rounds (one machine's layer times
    // drift by several per cent between minutes; alternating keeps the comparison fair).
    auto gemv = [&](auto launcher, bool overlap) {
        return [&, launcher, overlap](const float *w, const double *xl, const double *xh, double *yl, double *yh) {
            GemvArgs p = {w, nullptr, n, n, 1, xl, xh, yl, yh, lvk_ibp::error_term(n + 2.0), 0, 1};
            return (cudaError_t)launcher(p, (size_t)n * 16, 0, overlap, t.s);
        };
    };
    using Layer = std::function<cudaError_t(const float *, const double *, const double *, double *, double *)>;
    std::vector<std::pair<const char *, Layer>> variants = {
        {"1 row per warp, 16 warps, 8 loads in flight, overlapped", gemv(launch_gemv<16, 1, 1, 8>, true)},
        {"1 row per warp, 16 warps, 8 loads in flight, not overlapped", gemv(launch_gemv<16, 1, 1, 8>, false)},
        {"2 rows per warp, 8 warps, 4 loads each, overlapped", gemv(launch_gemv<8, 2, 1, 4>, true)},
        {"2 rows per warp, 8 warps, 4 loads each, not overlapped", gemv(launch_gemv<8, 2, 1, 4>, false)},
        {"2 rows per warp, 16 warps (128 blocks), 4 loads each, overlapped", gemv(launch_gemv<16, 2, 1, 4>, true)},
        {"2 rows per warp, 16 warps (128 blocks), 4 loads each, overlapped, input staged one element at a time (session 3)", gemv(launch_gemv<16, 2, 1, 4, 1, 0>, true)},
        {"2 rows per warp, 16 warps (128 blocks), 4 loads each, overlapped, input staged 4 quads per thread", gemv(launch_gemv<16, 2, 1, 4, 1, 4>, true)},
        {"1 row per warp, 16 warps, 16 loads in flight, overlapped", gemv(launch_gemv<16, 1, 1, 16>, true)},
        {"2 rows per warp, 16 warps (128 blocks), 8 loads each, overlapped", gemv(launch_gemv<16, 2, 1, 8>, true)},
        {"2 rows per warp, 16 warps (128 blocks), 4 loads each, overlapped, registers for 2 blocks per SM", gemv(launch_gemv<16, 2, 1, 4, 2>, true)},
        {"2 rows per warp, 16 warps (128 blocks), 2 loads each, overlapped, registers for 2 blocks per SM", gemv(launch_gemv<16, 2, 1, 2, 2>, true)},
        {"streaming probe: the same rows summed in f32, nothing else", [&](const float *w, const double *, const double *, double *yl, double *) {
             stream_probe<<<n / 16, 512, 0, t.s>>>(w, n, reinterpret_cast<float *>(yl));
             return cudaGetLastError();
         }},
    };
    std::vector<std::vector<double>> one(variants.size()), chain(variants.size());
    for (int round = 0; round < 5; round++)
        for (size_t v = 0; v < variants.size(); v++) {
            auto &layer = variants[v].second;
            one[v].push_back(t.ms([&] { CK(layer(dw[0], l, h, al, ah)); }, 10));
            chain[v].push_back(t.ms([&] {
                for (uint32_t k = 0; k < layers; k++)
                    CK(layer(dw[k], k ? al + ((k - 1) & 1) * n : l, k ? ah + ((k - 1) & 1) * n : h, al + (k & 1) * n,
                             ah + (k & 1) * n));
            }, 10));
        }
    auto med = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; };
    for (size_t v = 0; v < variants.size(); v++)
        printf("| GEMV 4096x4096 b1, centre / radius, %s | one layer %.4f ms | 8 layers (kernels only) %.4f ms (median of 5 alternating rounds) |\n",
               variants[v].first, med(one[v]), med(chain[v]));
    auto v2 = report("as chosen (lvk_ibp_linear_gemv)", [&](const float *w, const double *xl, const double *xh, double *yl, double *yh) {
        return (cudaError_t)lvk_ibp_linear_gemv(w, nullptr, n, n, 1, xl, xh, yl, yh, 0, t.s);
    });
    compare("GEMV centre / radius vs directed rounding", v2.first, v2.second, v1.first, v1.second);
    int bad = 0;
    for (int s = 0; s < 200; s++) {
        size_t row = (size_t)(std::fabs(unit()) * n) % n;
        long double lo_ref = 0, hi_ref = 0, mag = 0;
        for (size_t k = 0; k < n; k++) {
            long double wv = w[row * n + k];
            lo_ref += wv > 0 ? wv * xl_h[k] : wv * xh_h[k];
            hi_ref += wv > 0 ? wv * xh_h[k] : wv * xl_h[k];
            mag += std::fabs((double)wv) * std::max(std::fabs(xl_h[k]), std::fabs(xh_h[k]));
        }
        long double slack = 1e-17L * mag; // long double's own rounding over 4096 terms
        if ((long double)v2.first[row] > lo_ref + slack || (long double)v2.second[row] < hi_ref - slack) bad++;
    }
    printf("| GEMV centre / radius | sampled rows not enclosing the long-double reference: %d of 200 |\n", bad);
    char *a, *b;
    size_t bytes = (size_t)n * n * 4 * layers;
    CK(cudaMalloc(&a, bytes)); CK(cudaMalloc(&b, bytes));
    double copy = t.ms([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, t.s)); }, 10);
    double floor_ms = bytes / (2.0 * bytes / copy); // weight bytes / copy bandwidth (read + write)
    printf("| GEMV 4096x4096 b1, 8 layers | weight-read floor %.4f ms | copy %.0f GB/s |\n", floor_ms, 2.0 * bytes / copy / 1e6);
    CK(cudaFree(a)); CK(cudaFree(b));
    for (auto p : dw) CK(cudaFree(p));
    return bad;
}

int main() {
    int dev_id = 0, sms = 0;
    cudaDeviceProp prop;
    CK(cudaGetDevice(&dev_id));
    CK(cudaGetDeviceProperties(&prop, dev_id));
    sms = prop.multiProcessorCount;
    printf("# IBP kernel design study on %s (%d SMs)\n\n", prop.name, sms);
    Timer t;
    double *out;
    CK(cudaMalloc(&out, (size_t)sms * 8 * 256 * 8));
    int iters = 4096;
    auto peak = [&](auto kernel, int mk, const char *name) {
        double ms = t.ms([&] { kernel<<<sms * 4, 256>>>(out, iters); CK(cudaGetLastError()); }, 5);
        double flop = 2.0 * 16 * 8 * mk * 6.0 * iters * (sms * 4 * 8);
        printf("| DMMA %s peak | %.1f TFLOP/s |\n", name, flop / ms / 1e9);
    };
    peak(peak_kernel<4>, 4, "m16n8k4");
    peak(peak_kernel<8>, 8, "m16n8k8");
    peak(peak_kernel<16>, 16, "m16n8k16");
    CK(cudaFree(out));
    int bad = 0;
    bad += linear_case(1024, 4096, 4096, sms, t);
    bad += linear_case(64, 4096, 4096, sms, t);
    bad += linear_case(4096, 1024, 1024, sms, t);
    bad += linear_case(16384, 50, 50, sms, t);
    conv_case(3, 32, 32, 1024, sms, t);
    conv_case(32, 64, 16, 1024, sms, t);
    CK(cudaStreamCreateWithFlags(&t.s, cudaStreamNonBlocking));
    bad += gemv_chain(t);
    printf("\n%s\n", bad ? "FAILED: tensor-core bounds missed the reference" : "all sampled tensor-core bounds enclose the reference");
    return bad ? 1 : 0;
}
