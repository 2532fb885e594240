// Sound linear bounds (the CROWN / DeepPoly family) for chains of dense layers, one box per
// block: the GPU twin of src/ibp/crown.rs for networks that are Linear (+ ReLU) layers.
//
// For each box the block computes, layer by layer, IBP bounds of every pre-activation (IEEE
// directed rounding), then tightens the unstable neurons' bounds by a backward linear pass
// from each of them (two rows per neuron: +e_j and -e_j), and finally runs the backward pass
// from the caller's rows C of the output. A backward pass carries f64 coefficients A over a
// layer's values and a constant c (accumulated rounding down):
//   - through a linear layer: c += A·b (rounded down) and A' = A·W in round-to-nearest; the
//     rounding of each entry of A' is at most γ_n Σ_o |A_o||W_oi|, which is charged to the
//     row as γ_n · Σ_o |A_o| · Σ_i colmax_i · max|a_i| (rounded up), a_i the layer's input;
//   - through a ReLU with input bounds [l, u]: the exact CROWN choices (slope 1 or 0 below;
//     the chord above, its slope rounded up and the product rounded so that the line stays
//     above the chord), every constant rounded down;
//   - at the input box: c += Σ min(A_i·lo_i, A_i·hi_i), rounded down; the bound is c minus
//     the charged error, rounded down.
// Every inequality holds for the numbers actually used, so the bound is a rigorous lower
// bound of the real-number network (docs/soundness.md, "Linear bounds on the GPU").

#include <cuda_runtime.h>
#include <math_constants.h>
#include <stdint.h>

#include "lvk.h"

namespace {

constexpr int THREADS = 256;

// A NaN (only from inf - inf or 0 * inf) becomes the widest bound.
__device__ __forceinline__ double low_or_inf(double v) { return v != v ? -CUDART_INF : v; }
__device__ __forceinline__ double high_or_inf(double v) { return v != v ? CUDART_INF : v; }

// min(a·lo, a·hi), rounded down (a zero coefficient contributes nothing, even on an infinite
// bound).
__device__ __forceinline__ double term_down(double a, double lo, double hi) {
    if (a == 0.0) return 0.0;
    return a > 0.0 ? __dmul_rd(a, lo) : __dmul_rd(a, hi);
}

struct Shared {
    double *ylo, *yhi;  // every layer's output bounds (layer m at layers[m].offset)
    double *xlo, *xhi;  // the box
    double *a, *b;      // rp rows' coefficients, transposed (a[o·(rp + 1) + r]); a layer step
                        // reads a and writes b, then they swap
    double *cst, *err;  // per row: constant (rounded down), charged rounding error (rounded up)
    double *mag;        // per layer: Σ_i colmax_i · max|input_i| (rounded up)
    double *slope;      // per unstable ReLU input: its chord's slope u / (u - l), rounded up
    double2 *bc;        // per neuron: its bias (0 without one, read from the sealed weights), and
                        // l where its ReLU is unstable (the chord's root), else 0: one load
    int *live;          // per layer: the outputs whose coefficient can be nonzero
    int *nlive;         // per layer: how many
    int *unst;          // the unstable neurons of the layer being tightened
    int *nunst;
};

struct Args {
    const lvk_crown_layer *layers;
    const double *colmax;
    uint32_t n_layers, n_in, width, rp;
    const double *rows;
    uint32_t n_rows;
    lvk_crown_store store;
    // GUARDED's per-box records (guard_doubles() each, one per block of the launch): the first
    // layer k0 where the first pass's intersection changed a bound (NONE_K0 if none), every
    // layer's bounds below k0, and k0's bounds before the intersection.
    double *guard;
    uint64_t box0;  // the launch's first box (its blocks are boxes box0, box0 + 1, ...)
};

// lvk_crown_bounds's relaxations, and (RESUME) the guarded relaxation's second launch.
enum : uint32_t { INTERSECTED = 0, TEXTBOOK = 1, GUARDED = 2, RESUME = 3 };

// What a layer's tightening step bounds by backward passes, and what it keeps.
enum class Tighten {
    Intersect,  // the neurons IBP leaves unstable, intersected with IBP
    All,        // every neuron, its backward-pass bounds alone (textbook CROWN)
    Unstable,   // the neurons IBP leaves unstable, their backward-pass bounds alone
    Stable,     // the neurons IBP decides; the others take the first pass's saved bounds
};

constexpr double NONE_K0 = -1.0;

// A guard record: [0] k0, then lo and hi of every layer (2·total_out), then k0's lo and hi
// before the intersection (2·width).
__host__ __device__ inline size_t guard_doubles(uint32_t total_out, uint32_t width) {
    return 1 + 2 * (size_t)total_out + 2 * (size_t)width;
}

// The block's guard record (GUARDED writes it, RESUME reads it), and in it the bounds before
// the intersection (lo at [0, width), hi at [width, 2·width)). Computed where they are used,
// from the launch's arguments, not held in registers through the kernel: every instance sits
// at the 64-register cap. (Compiled as relocatable device code, as this file was until
// build.rs compiled each file alone, the guarded instance spilled 84 bytes a thread with
// those pointers held, and still 52 without: on an H200, 17 million local-memory requests and
// an L1 hit rate of 94.5 % instead of 99.7 %, 3.76 ms against 3.45 for the intersected one.)
__device__ __forceinline__ double *guard_record(const Args &g, uint32_t total_out) {
    return g.guard + blockIdx.x * guard_doubles(total_out, g.width);
}

__device__ __forceinline__ double *raw_bounds(const Args &g, uint32_t total_out) {
    return guard_record(g, total_out) + 1 + 2 * (size_t)total_out;
}

// Input bounds of linear layer m: the box, or the previous layer's outputs (after its ReLU).
__device__ __forceinline__ double in_lo(const Args &g, const Shared &s, uint32_t m, uint32_t i) {
    if (m == 0) return s.xlo[i];
    const lvk_crown_layer &p = g.layers[m - 1];
    double v = s.ylo[p.offset + i];
    return p.relu ? fmax(v, 0.0) : v;
}

__device__ __forceinline__ double in_hi(const Args &g, const Shared &s, uint32_t m, uint32_t i) {
    if (m == 0) return s.xhi[i];
    const lvk_crown_layer &p = g.layers[m - 1];
    double v = s.yhi[p.offset + i];
    return p.relu ? fmax(v, 0.0) : v;
}

constexpr int WARPS = THREADS / 32;
// Lanes per output in the kernel's interval bounds (a power of two that divides 32 and
// THREADS), and how far through_linear's loop over live outputs is unrolled. On an H200, 16 384
// ACAS Xu boxes: one lane per output and no unrolling 12.4–12.7 ms, 4 lanes 11.0 ms, 4 lanes
// and unrolling by 2 10.9 ms, by 4 10.9–11.3 ms (bench/results/gpu-h200-2026-11-29-plan/).
constexpr uint32_t SPLIT = 4;
constexpr int UNROLL = 2;

__device__ __forceinline__ double warp_sum_down(double v) {
    for (int off = 16; off > 0; off >>= 1) v = __dadd_rd(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// The rows' coefficients are stored transposed, one column of RS = rp + 1 per neuron:
// a[o·RS + r] is row r's coefficient of neuron o.
//
// A coefficient λ of a ReLU's output, as one μ of its input with bounds [x_l, x_u]: the exact
// CROWN choices. λ > 0 (a lower line): slope 1 or 0, whichever CROWN's adaptive rule picks.
// λ < 0 (the chord above, z <= s·(x - l) with s >= u / (u - l)): μ = λ·s rounded down, so
// μ/λ >= s, a steeper line through (l, 0), still above the chord; negative, never zero, since
// λ < 0 < s; its constant -μ·l is summed, rounded down, by the next through_linear.
__device__ __forceinline__ double relax(double lam, double x_l, double x_u, double slope) {
    if (lam == 0.0 || x_u <= 0.0) return 0.0;
    if (x_l >= 0.0) return lam;
    if (lam > 0.0) return x_u >= -x_l ? lam : 0.0;  // z >= x or z >= 0
    return __dmul_rd(lam, slope);
}

// The ReLU (if any) between layer p - 1 and layer p, as through_linear's output needs it.
struct InRelu {
    const double *lo, *hi, *slope;
    bool on;
};

__device__ __forceinline__ InRelu relu_before(const Args &g, const Shared &s, uint32_t p) {
    if (p == 0 || !g.layers[p - 1].relu) return {nullptr, nullptr, nullptr, false};
    const uint32_t at = g.layers[p - 1].offset;
    return {s.ylo + at, s.yhi + at, s.slope + at, true};
}

// The last warp sums the rows' constants while the others multiply the coefficients.
constexpr uint32_t TILE_THREADS = THREADS - 32;

// The same pointer, hidden from the compiler's arithmetic: p + 32-bit offset then costs one
// multiply-add instead of a 64-bit re-computation of the base every time.
__device__ __forceinline__ const float *opaque(const float *p) {
    asm("mov.b64 %0, %0;" : "+l"(p));
    return p;
}

// through_linear's products: rows of `a` times layer l's weights, relaxed through the ReLU in
// front of it, into `b`; each tile thread computes R rows (r, r + rt, ...) by 2 inputs (the
// inputs: cols[k], or k without a list).
template <int R>
__device__ __forceinline__ void tiles(Shared &s, const lvk_crown_layer &l, const InRelu &in, const int *live,
                                      uint32_t nl, const int *cols, uint32_t nc, uint32_t rows, uint32_t RS) {
    const uint32_t nin = l.in_f, rt = (rows + R - 1) / R, ct = (nc + 1) / 2;
    for (uint32_t e = threadIdx.x; e < rt * ct; e += TILE_THREADS) {
        const uint32_t rg = e % rt, k0 = 2 * (e / rt);
        const bool two = k0 + 1 < nc;
        const uint32_t i0 = cols ? (uint32_t)cols[k0] : k0;
        const uint32_t i1 = !two ? i0 : cols ? (uint32_t)cols[k0 + 1] : k0 + 1;
        const float *w0p = opaque(l.w + i0), *w1p = opaque(l.w + i1);
        double c0[R], c1[R];
#pragma unroll
        for (int q = 0; q < R; q++) c0[q] = c1[q] = 0.0;
#pragma unroll UNROLL
        for (uint32_t t = 0; t < nl; t++) {
            const uint32_t o = (uint32_t)live[t];
            // Rows past `rows` (at most rp - 1) read unused coefficients; their sums are dropped.
            const double *ac = s.a + (o * RS + rg);
            double a[R];
#pragma unroll
            for (int q = 0; q < R; q++) a[q] = ac[q * rt];
            // 32-bit offsets from the two columns (one multiply-add an address; o·nin fits:
            // the block's shared memory holds rows of `width` >= in_f, out_f doubles, so
            // in_f·out_f < 3000²); without a second column i1 = i0, whose products are dropped.
            const uint32_t wo = o * nin;
            const double w0 = (double)__ldg(w0p + wo), w1 = (double)__ldg(w1p + wo);
#pragma unroll
            for (int q = 0; q < R; q++) {
                c0[q] = fma(a[q], w0, c0[q]);
                c1[q] = fma(a[q], w1, c1[q]);
            }
        }
        double l0 = 0.0, u0 = 0.0, s0 = 0.0, l1 = 0.0, u1 = 0.0, s1 = 0.0;
        if (in.on) {
            l0 = in.lo[i0];
            u0 = in.hi[i0];
            s0 = in.slope[i0];
            if (two) {
                l1 = in.lo[i1];
                u1 = in.hi[i1];
                s1 = in.slope[i1];
            }
        }
#pragma unroll
        for (int q = 0; q < R; q++) {
            const uint32_t r = rg + q * rt;
            if (r < rows) {
                s.b[i0 * RS + r] = in.on ? relax(c0[q], l0, u0, s0) : c0[q];
                if (two) s.b[i1 * RS + r] = in.on ? relax(c1[q], l1, u1, s1) : c1[q];
            }
        }
    }
}

// Coefficients `a` (rows over layer p's pre-activations) through linear layer p and then
// through the ReLU in front of it (if any) into `b` (rows over layer p - 1's pre-activations,
// or over the box when p = 0); then a and b swap. The bias and the constants of layer p's own
// ReLU chords go into the constants, the rounding into the charged error. One barrier a layer.
//
// The products: each tile thread computes 2 or 4 rows by 2 inputs (tiles()), so every
// coefficient and weight it loads serves several products, and relaxes its results through
// the ReLU before storing them. The per-row sums: the last warp, one row per lane, reading the
// same `a` (the chord constant of an unstable neuron is −μ·l where μ < 0, rounded down).
//
// A step ends at a barrier, so it takes as long as its longest thread (Nsight Compute on an
// H200: a quarter of the warps' time was spent waiting there), and the per-element work is
// mostly address arithmetic (FP64 instructions were 8 % of those executed). On 16 384 ACAS Xu
// boxes in device memory, one change at a time (bench/results/gpu-h200-2026-11-30f/):
// 5.20–5.37 ms before; skipping inputs whose ReLU is always off 4.67–4.73 ms; a thread a row
// for the input terms 4.21–4.31; tiles of 2 rows where threads are idle 4.11; 32-bit weight
// offsets from opaque column pointers and one load of (bias, chord root) 3.84–3.95; a
// tightening pass's first rows a warp a neuron over the live inputs only 3.70–3.74. Tried and
// slower: a second sums warp (4.39–4.42), rows per pass 48 or 64 (4.50–5.26), each tile's sum
// split over two lanes (3.92–4.16), the layers' descriptors copied to shared memory
// (3.75–3.79), five blocks a multiprocessor with 192 threads (4.10–4.22) or with 256 threads
// and 48 registers (5.40–5.46, spilling), a layer's unstable neurons shared out evenly over its
// passes (12 + 11 instead of 16 + 7: 3.75–3.78 against 3.64–3.69; bench/results/gpu-h200-2026-11-30m/,
// with where the instructions go).
//
// Tried on an H200 with 16 384 ACAS Xu boxes (6.5–6.7 ms a call with this code;
// bench/results/gpu-h200-2026-11-29-fused/): tiles of 4 rows by 3 or 4 inputs spill under the
// 64-register cap (7.5 and 8.8 ms); splitting each tile's sum over 2 or 4 lanes when rows are
// few, or each row's constant sums over several lanes, changed nothing; the same products on
// the FP64 tensor cores (mma.sync m8n8k4, each warp 8 rows × 8 inputs, with the tensor-core
// IBP kernels' error model) passed the tests but took 7.0 ms against 6.5 ms: tiles of 8 rows
// are mostly padding where a pass has 10 to 32 rows.
__device__ void through_linear(const Args &g, Shared &s, uint32_t p, uint32_t rows) {
    const lvk_crown_layer &l = g.layers[p];
    const uint32_t nl = s.nlive[p], RS = g.rp + 1;
    const int *live = s.live + l.offset;
    if (threadIdx.x < TILE_THREADS) {
        const InRelu in = relu_before(g, s, p);
        // Only the inputs a coefficient can reach: past the first layer, the previous layer's
        // live outputs (a ReLU that is always off sends every coefficient to 0, and no later
        // step reads a neuron that is not live), so its entries of b are never written.
        const int *cols = p > 0 ? s.live + g.layers[p - 1].offset : nullptr;
        const uint32_t nc = p > 0 ? (uint32_t)s.nlive[p - 1] : l.in_f;
        // Tiles of 4 rows, or of 2 where that still leaves a tile per thread at most (each
        // thread's chain of products is then half as long, and the step ends sooner).
        if (((rows + 1) / 2) * ((nc + 1) / 2) <= TILE_THREADS)
            tiles<2>(s, l, in, live, nl, cols, nc, rows, RS);
        else
            tiles<4>(s, l, in, live, nl, cols, nc, rows, RS);
    } else {
        // Two chains of sums (even and odd t): the loop is bound by their latency.
        // The chord constant −μ·l of an unstable neuron (μ < 0) is one fused step rounded down
        // (l = 0 elsewhere adds nothing).
        const double2 *bc = s.bc + l.offset;
        for (uint32_t r = threadIdx.x - TILE_THREADS; r < rows; r += 32) {
            double c0 = 0.0, c1 = 0.0, sum0 = 0.0, sum1 = 0.0;
            for (uint32_t t = 0; t < nl; t += 2) {
                const uint32_t o = (uint32_t)live[t];
                const double v = s.a[o * RS + r];
                const double2 k = bc[o];
                c0 = __fma_rd(v, k.x, c0);
                if (v < 0.0) c0 = __fma_rd(-v, k.y, c0);
                sum0 = __dadd_ru(sum0, fabs(v));
                if (t + 1 < nl) {
                    const uint32_t o1 = (uint32_t)live[t + 1];
                    const double v1 = s.a[o1 * RS + r];
                    const double2 k1 = bc[o1];
                    c1 = __fma_rd(v1, k1.x, c1);
                    if (v1 < 0.0) c1 = __fma_rd(-v1, k1.y, c1);
                    sum1 = __dadd_ru(sum1, fabs(v1));
                }
            }
            s.cst[r] = __dadd_rd(s.cst[r], __dadd_rd(c0, c1));
            s.err[r] = __dadd_ru(s.err[r], __dmul_ru(__dmul_ru(l.gamma, __dadd_ru(sum0, sum1)), s.mag[p]));
        }
    }
    __syncthreads();
    double *t = s.a;
    s.a = s.b;
    s.b = t;
}

// Backward from coefficients `a` over the pre-activations of layer `top` down to the box:
// leaves each row's lower bound in cst[r], and (when `coeffs` is not NULL) the coefficients B
// on the box and the constant k (offsets[r]) of the linear bound itself: rows·y >= B·x + k
// holds at every point x of the box (every charge is sized by the box's magnitudes, so it
// covers each point), which lets the caller cut away the part of the box where it already
// proves the property.
__device__ void backward(const Args &g, Shared &s, uint32_t top, uint32_t rows, double *coeffs, double *offsets) {
    for (uint32_t p = top + 1; p-- > 0;) through_linear(g, s, p, rows);
    const uint32_t RS = g.rp + 1, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (g.n_in <= 32) {
        // Few inputs (ACAS Xu has 5): a thread a row, without the shuffles' latency.
        for (uint32_t r = threadIdx.x; r < rows; r += THREADS) {
            double c = 0.0;
            for (uint32_t i = 0; i < g.n_in; i++) {
                const double bi = s.a[i * RS + r];
                c = __dadd_rd(c, term_down(bi, s.xlo[i], s.xhi[i]));
                if (coeffs) coeffs[(size_t)r * g.n_in + i] = bi;
            }
            if (offsets) offsets[r] = low_or_inf(__dsub_rd(s.cst[r], s.err[r]));
            s.cst[r] = low_or_inf(__dsub_rd(__dadd_rd(s.cst[r], c), s.err[r]));
        }
        __syncthreads();
        return;
    }
    for (uint32_t r = warp; r < rows; r += WARPS) {
        double c = 0.0;
        for (uint32_t i = lane; i < g.n_in; i += 32) {
            const double bi = s.a[i * RS + r];
            c = __dadd_rd(c, term_down(bi, s.xlo[i], s.xhi[i]));
            if (coeffs) coeffs[(size_t)r * g.n_in + i] = bi;
        }
        c = warp_sum_down(c);
        if (lane == 0) {
            if (offsets) offsets[r] = low_or_inf(__dsub_rd(s.cst[r], s.err[r]));
            s.cst[r] = low_or_inf(__dsub_rd(__dadd_rd(s.cst[r], c), s.err[r]));
        }
    }
    __syncthreads();
}

// Indices o < n where pred(o) holds, in order, into out[]; returns how many (warp 0 only:
// one ballot per 32 candidates).
template <class Pred>
__device__ __forceinline__ int compact(uint32_t n, int *out, Pred pred) {
    const uint32_t lane = threadIdx.x & 31;
    int count = 0;
    for (uint32_t base = 0; base < n; base += 32) {
        uint32_t o = base + lane;
        bool keep = o < n && pred(o);
        unsigned mask = __ballot_sync(0xffffffffu, keep);
        if (keep) out[count + __popc(mask & ((1u << lane) - 1))] = (int)o;
        count += __popc(mask);
    }
    return count;
}

// Outputs of layer m that a coefficient can reach (not a ReLU that is always off), and the
// chord slopes of its unstable ReLUs.
__device__ void list_live(const Args &g, Shared &s, uint32_t m) {
    const lvk_crown_layer &l = g.layers[m];
    const double *lo = s.ylo + l.offset, *hi = s.yhi + l.offset;
    if (threadIdx.x < 32) {
        const bool relu = l.relu != 0;
        int n = compact(l.out_f, s.live + l.offset, [&](uint32_t o) { return !relu || hi[o] > 0.0; });
        if (threadIdx.x == 0) s.nlive[m] = n;
    }
    for (uint32_t o = threadIdx.x; o < l.out_f; o += THREADS) {
        const bool unstable = l.relu && lo[o] < 0.0 && hi[o] > 0.0;
        // An unstable neuron with an infinite bound (an overflow) has no chord: a NaN slope
        // makes every row that would use it NaN, which ends as the widest bound. (The slope
        // would round to 0 there, and z <= 0 does not hold; the layer's input magnitude is then
        // infinite too, so the error charge would discard such a row anyway, but the bound
        // should not rest on that.)
        if (unstable)
            s.slope[l.offset + o] = isfinite(lo[o]) && isfinite(hi[o]) ? __ddiv_ru(hi[o], __dsub_rd(hi[o], lo[o]))
                                                                       : CUDART_NAN;
        s.bc[l.offset + o].y = unstable ? lo[o] : 0.0;
    }
    __syncthreads();
}

// At most 64 registers a thread, so that four blocks share a multiprocessor: with the 113 the
// compiler takes unbounded, two did (25 % occupancy), and on an H200 16 384 ACAS Xu boxes took
// 16.7 ms instead of 11.8 ms; 48 or 40 registers spill and are slower again
// (bench/results/gpu-h200-2026-11-29-plan/).
//
// One instance per relaxation (RELAX): the guarded relaxation's bookkeeping costs the others
// nothing. GUARDED is the intersected pass that also writes each box's guard record; RESUME,
// launched after it over the same boxes, runs the second pass of the boxes whose record names
// a layer k0 (the others return at once): the layers below k0 from the record, k0's
// IBP-stable neurons by backward passes (its unstable ones keep the first pass's backward
// bounds), past k0 the IBP-unstable neurons by backward passes, all of them without the
// intersection; each row and output bound then keeps the better of the two passes.
//
// On an H200, 16 384 ACAS Xu boxes in device memory through ibp_propagate_ex (IBP, both
// launches, the narrowing; bench/results/gpu-h200-2026-11-30j/final/): 4.48–4.56 ms, against
// 3.64–3.72 for the intersected relaxation alone in the same calls. Most of the 0.8 ms is the
// second launch (a quarter of the boxes, each about as much work as its first pass); Nsight
// Compute puts the first launch 0.1 ms above the intersected one. (Its 0.35 ms in
// bench/results/gpu-h200-2026-11-30i/ was mostly a spill: build.rs.)
// Tried and no faster there: no saved bounds at all (the second launch then bounds every
// neuron at k0); the second launch with textbook CROWN's rows per pass; not bounding k0's
// IBP-stable neurons again where no ReLU follows (0.08 ms less, but tighter than the first
// pass on half as many outputs; 30j/ab-reverted-second-pass.txt). Slower: both passes in one
// block, 5.1–5.4 ms (registers, under the 64-register cap; bench/results/gpu-h200-2026-11-30g/),
// and 800 more bytes of shared memory a block (4.1 ms for the intersected kernel alone: four
// blocks no longer fit the carve-out that leaves the weights 92 KB of L1).
// A factorised backward pass (each layer's pre-activations as an affine function of the box
// and of the unstable ReLUs' outputs below it, so a row costs columns × unstable neurons
// instead of width² × layers) gave the same bounds and took longer: 5.00–5.10 ms against
// 3.63–3.67 for the intersected relaxation, latency-bound at three blocks a multiprocessor
// (bench/results/gpu-h200-2026-11-30k/, with its patch).
template <uint32_t RELAX>
__global__ void __launch_bounds__(THREADS, 4) crown_kernel(Args g, const double *__restrict__ box_lo,
                                                        const double *__restrict__ box_hi, double *lower,
                                                        double *out_lo, double *out_hi, double *coeffs,
                                                        double *offsets, uint32_t total_out) {
    const uint32_t W = g.width, rp = g.rp;
    constexpr uint32_t NONE = 0xffffffffu;
    uint32_t from = 0;  // RESUME: k0, from the box's guard record
    if (RELAX == RESUME) {
        const double k = guard_record(g, total_out)[0];
        if (!(k >= 0.0)) return;  // the intersection changed nothing: the first pass stands
        from = (uint32_t)k;
    }
    // GUARDED: the first layer where the intersection changed a bound, and whether the layer
    // being tightened had one (in shared memory: registers are full).
    __shared__ uint32_t k0;
    __shared__ int changed;
    if (RELAX == GUARDED && threadIdx.x == 0) {
        k0 = NONE;
        changed = 0;
    }
    extern __shared__ double2 smem[];
    const uint64_t box = g.box0 + blockIdx.x;
    Shared s;
    s.bc = smem;  // first: 16-byte aligned
    double *p = reinterpret_cast<double *>(smem + total_out);
    s.ylo = p; p += total_out;
    s.yhi = p; p += total_out;
    s.xlo = p; p += g.n_in;
    s.xhi = p; p += g.n_in;
    s.a = p; p += (size_t)(rp + 1) * W;
    s.b = p; p += (size_t)(rp + 1) * W;
    s.cst = p; p += rp;
    s.err = p; p += rp;
    s.mag = p; p += g.n_layers;
    s.slope = p; p += total_out;
    int *q = reinterpret_cast<int *>(p);
    s.live = q; q += total_out;
    s.nlive = q; q += g.n_layers;
    s.unst = q; q += W;
    s.nunst = q;

    const double *outer = nullptr;
    if (g.store.nodes && g.store.outer_slot && g.store.outer_slot[box] < g.store.slots)
        outer = g.store.nodes + (size_t)g.store.outer_slot[box] * 2 * g.store.total_out;
    for (uint32_t i = threadIdx.x; i < g.n_in; i += THREADS) {
        s.xlo[i] = box_lo[box * g.n_in + i];
        s.xhi[i] = box_hi[box * g.n_in + i];
    }
    __syncthreads();

    for (uint32_t m = 0; m < g.n_layers; m++) {
        const lvk_crown_layer &l = g.layers[m];
        // The layer's input: the box, or the previous layer's outputs (after its ReLU).
        const double *in_l = m == 0 ? s.xlo : s.ylo + g.layers[m - 1].offset;
        const double *in_u = m == 0 ? s.xhi : s.yhi + g.layers[m - 1].offset;
        const bool in_relu = m > 0 && g.layers[m - 1].relu;
        // Past the first layer, only the previous layer's live outputs (a ReLU that is always
        // off contributes exactly 0).
        const int *in_live = m > 0 ? s.live + g.layers[m - 1].offset : nullptr;
        const uint32_t n_in_live = m > 0 ? (uint32_t)s.nlive[m - 1] : l.in_f;
        // RESUME: below k0 the first pass's bounds (its backward passes' alone there).
        const bool kept = RELAX == RESUME && m < from;
        for (uint32_t o = threadIdx.x; kept && o < l.out_f; o += THREADS) {
            const double *rec = guard_record(g, total_out);
            s.ylo[l.offset + o] = rec[1 + l.offset + o];
            s.yhi[l.offset + o] = rec[1 + total_out + l.offset + o];
            s.bc[l.offset + o].x = l.bias ? (double)__ldg(l.bias + o) : 0.0;
        }
        // IBP through layer m, and the magnitude of its input for the error charges. Each
        // output's sums are split over SPLIT neighbouring lanes (inputs i ≡ q mod SPLIT): each
        // partial sum is a rigorous bound of its part, and so is their sum rounded the same
        // way. Every lane of a warp takes part in the shuffles, active or not.
        for (uint32_t base = 0; !kept && base < l.out_f * SPLIT; base += THREADS) {
            const uint32_t e = base + threadIdx.x, o = e / SPLIT, q = e % SPLIT;
            const bool active = o < l.out_f;
            double lo = 0.0, hi = 0.0;
            if (active) {
                const float *wr = l.w + (size_t)o * l.in_f;
                for (uint32_t k = q; k < n_in_live; k += SPLIT) {
                    const uint32_t i = in_live ? (uint32_t)in_live[k] : k;
                    double w = (double)__ldg(wr + i);
                    double xl = in_l[i], xu = in_u[i];
                    if (in_relu) {
                        xl = fmax(xl, 0.0);
                        xu = fmax(xu, 0.0);
                    }
                    if (w > 0.0) {
                        lo = __fma_rd(w, xl, lo);
                        hi = __fma_ru(w, xu, hi);
                    } else if (w < 0.0) {
                        lo = __fma_rd(w, xu, lo);
                        hi = __fma_ru(w, xl, hi);
                    }
                }
                if (q == 0 && l.bias) {
                    double b = (double)__ldg(l.bias + o);
                    lo = __dadd_rd(lo, b);
                    hi = __dadd_ru(hi, b);
                }
            }
#pragma unroll
            for (uint32_t off = 1; off < SPLIT; off <<= 1) {
                lo = __dadd_rd(lo, __shfl_xor_sync(0xffffffffu, lo, off));
                hi = __dadd_ru(hi, __shfl_xor_sync(0xffffffffu, hi, off));
            }
            if (!active || q != 0) continue;
            double ylo = low_or_inf(lo), yhi = high_or_inf(hi);
            if (outer) {
                // The enclosing box's bounds hold on this box too.
                ylo = fmax(ylo, outer[l.offset + o]);
                yhi = fmin(yhi, outer[g.store.total_out + l.offset + o]);
            }
            s.ylo[l.offset + o] = ylo;
            s.yhi[l.offset + o] = yhi;
            s.bc[l.offset + o].x = l.bias ? (double)__ldg(l.bias + o) : 0.0;
        }
        if (threadIdx.x < 32) {
            double acc = 0.0;
            for (uint32_t i = threadIdx.x; i < l.in_f; i += 32) {
                double mag = fmax(fabs(in_lo(g, s, m, i)), fabs(in_hi(g, s, m, i)));
                acc = __dadd_ru(acc, __dmul_ru(g.colmax[l.colmax_at + i], mag));
            }
            for (int off = 16; off > 0; off >>= 1) acc = __dadd_ru(acc, __shfl_down_sync(0xffffffffu, acc, off));
            if (threadIdx.x == 0) s.mag[m] = high_or_inf(acc);
        }
        __syncthreads();

        // Tighten the neurons whose ReLU is undecided (the first layer's IBP is already the
        // exact image of the box, up to rounding); textbook CROWN bounds them all.
        if (m > 0 && l.relu && !kept) {
            const Tighten how = RELAX == TEXTBOOK ? Tighten::All
                                : RELAX != RESUME ? Tighten::Intersect
                                : m == from       ? Tighten::Stable
                                                  : Tighten::Unstable;
            if (threadIdx.x < 32) {
                double *lo = s.ylo + l.offset, *hi = s.yhi + l.offset;
                // GUARDED, until k0: this layer's bounds before the intersection, IBP's here
                // and the backward passes' below for the neurons they bound. (RESUME restores
                // only the latter, on the neurons its own IBP leaves unstable: the same ones,
                // by the same arithmetic from the same bounds; were it not so, it would
                // restore IBP's bounds, still sound, never a stale value.)
                const bool save = RELAX == GUARDED && k0 == NONE;
                int n = compact(l.out_f, s.unst, [&](uint32_t o) {
                    const bool unstable = lo[o] < 0.0 && hi[o] > 0.0;
                    if (save) {
                        double *raw = raw_bounds(g, total_out);
                        raw[o] = lo[o];
                        raw[W + o] = hi[o];
                    }
                    if (how == Tighten::Stable && unstable) {
                        const double *raw = raw_bounds(g, total_out);
                        lo[o] = raw[o];
                        hi[o] = raw[W + o];
                    }
                    return how == Tighten::All || (how == Tighten::Stable ? !unstable : unstable);
                });
                if (threadIdx.x == 0) *s.nunst = n;
            }
            __syncthreads();
            const uint32_t nu = (uint32_t)*s.nunst, per = rp / 2;
            for (uint32_t first = 0; first < nu; first += per) {
                const uint32_t cnt = min(per, nu - first), rows = 2 * cnt;
                // Rows +e_j and -e_j through layer m's weights are ±W_j over its inputs, and
                // then through the ReLU in front of it: a warp a neuron, a lane an input, and
                // only the inputs a later step reads (layer m - 1's live outputs).
                const InRelu in = relu_before(g, s, m);
                const int *cols = s.live + g.layers[m - 1].offset;
                const uint32_t nc = (uint32_t)s.nlive[m - 1], lane = threadIdx.x & 31;
                for (uint32_t t = threadIdx.x >> 5; t < cnt; t += WARPS) {
                    const float *wj = l.w + (size_t)s.unst[first + t] * l.in_f;
                    for (uint32_t k = lane; k < nc; k += 32) {
                        const uint32_t i = (uint32_t)cols[k];
                        const double w = (double)__ldg(wj + i);
                        double up = w, down = -w;
                        if (in.on) {
                            up = relax(w, in.lo[i], in.hi[i], in.slope[i]);
                            down = relax(-w, in.lo[i], in.hi[i], in.slope[i]);
                        }
                        s.a[i * (rp + 1) + 2 * t] = up;
                        s.a[i * (rp + 1) + 2 * t + 1] = down;
                    }
                }
                for (uint32_t r = threadIdx.x; r < rows; r += THREADS) {
                    int j = s.unst[first + r / 2];
                    double bj = l.bias ? (double)__ldg(l.bias + j) : 0.0;
                    s.cst[r] = (r & 1) ? -bj : bj;
                    s.err[r] = 0.0;
                }
                __syncthreads();
                backward(g, s, m - 1, rows, nullptr, nullptr);
                int moved = 0;  // GUARDED: whether this thread's intersections changed a bound
                for (uint32_t t = threadIdx.x; t < cnt; t += THREADS) {
                    int j = s.unst[first + t];
                    double lo = s.cst[2 * t], hi = -s.cst[2 * t + 1];
                    if (how == Tighten::Intersect) {
                        if (RELAX == GUARDED && k0 == NONE) {
                            double *raw = raw_bounds(g, total_out);
                            raw[j] = lo;
                            raw[W + j] = hi;
                        }
                        const double nl = fmax(s.ylo[l.offset + j], lo), nh = fmin(s.yhi[l.offset + j], hi);
                        moved |= nl != lo || nh != hi;
                        lo = nl;
                        hi = nh;
                    }
                    s.ylo[l.offset + j] = lo;
                    s.yhi[l.offset + j] = hi;
                }
                if (RELAX == GUARDED) {
                    if (__syncthreads_or(moved) && threadIdx.x == 0) changed = 1;
                } else {
                    __syncthreads();
                }
            }
            // (Read by the next layer's tightening, after its IBP step's barrier.)
            if (RELAX == GUARDED && threadIdx.x == 0 && k0 == NONE && changed) k0 = m;
        }
        list_live(g, s, m);
    }

    // The caller's rows over the output, rp at a time.
    const uint32_t last = g.n_layers - 1;
    const lvk_crown_layer &L = g.layers[last];
    for (uint32_t first = 0; first < g.n_rows; first += rp) {
        const uint32_t rows = min(rp, g.n_rows - first);
        for (uint32_t e = threadIdx.x; e < rows * L.out_f; e += THREADS) {
            uint32_t r = e / L.out_f, o = e - r * L.out_f;
            s.a[(size_t)o * (rp + 1) + r] = g.rows[(size_t)(first + r) * L.out_f + o];
        }
        for (uint32_t r = threadIdx.x; r < rows; r += THREADS) {
            s.cst[r] = 0.0;
            s.err[r] = 0.0;
        }
        __syncthreads();
        // The linear bound itself is the first pass's (the second only raises `lower`).
        const bool own = coeffs && RELAX != RESUME;
        backward(g, s, last, rows, own ? coeffs + (box * g.n_rows + first) * g.n_in : nullptr,
                 own ? offsets + box * g.n_rows + first : nullptr);
        for (uint32_t r = threadIdx.x; r < rows; r += THREADS) {
            // IBP's bound of the same row, from the tightened output bounds: never looser.
            double ibp = 0.0;
            const double *c = g.rows + (size_t)(first + r) * L.out_f;
            for (uint32_t o = 0; o < L.out_f; o++)
                ibp = __dadd_rd(ibp, term_down(c[o], s.ylo[L.offset + o], s.yhi[L.offset + o]));
            double *at = lower + box * g.n_rows + first + r, v = fmax(s.cst[r], low_or_inf(ibp));
            *at = RELAX == RESUME ? fmax(*at, v) : v;
        }
        __syncthreads();
    }
    for (uint32_t o = threadIdx.x; o < L.out_f; o += THREADS) {
        double *lo = out_lo + box * L.out_f + o, *hi = out_hi + box * L.out_f + o;
        *lo = RELAX == RESUME ? fmax(*lo, s.ylo[L.offset + o]) : s.ylo[L.offset + o];
        *hi = RELAX == RESUME ? fmin(*hi, s.yhi[L.offset + o]) : s.yhi[L.offset + o];
    }
    if (RELAX == GUARDED) {
        // The record: k0 (last written many barriers ago), and (when there is one) every
        // layer's bounds below it.
        const uint32_t k = k0;
        double *rec = guard_record(g, total_out);
        if (threadIdx.x == 0) rec[0] = k == NONE ? NONE_K0 : (double)k;
        for (uint32_t o = threadIdx.x; k != NONE && o < g.layers[k].offset; o += THREADS) {
            rec[1 + o] = s.ylo[o];
            rec[1 + total_out + o] = s.yhi[o];
        }
    }
    if (RELAX != RESUME && g.store.nodes && g.store.self_slot && g.store.self_slot[box] < g.store.slots) {
        double *mine = g.store.nodes + (size_t)g.store.self_slot[box] * 2 * g.store.total_out;
        for (uint32_t o = threadIdx.x; o < g.store.total_out; o += THREADS) {
            mine[o] = s.ylo[o];
            mine[g.store.total_out + o] = s.yhi[o];
        }
    }
}

// colmax of every layer: max over outputs of |w[o][i]|, from the weights where they live.
__global__ void colmax_kernel(const lvk_crown_layer *layers, uint32_t n_layers, double *colmax) {
    uint32_t m = blockIdx.y;
    if (m >= n_layers) return;
    const lvk_crown_layer &l = layers[m];
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < l.in_f; i += gridDim.x * blockDim.x) {
        double c = 0.0;
        for (uint32_t o = 0; o < l.out_f; o++) c = fmax(c, fabs((double)l.w[(size_t)o * l.in_f + i]));
        // A NaN weight makes every charge infinite: no bound relies on it.
        for (uint32_t o = 0; o < l.out_f; o++)
            if (l.w[(size_t)o * l.in_f + i] != l.w[(size_t)o * l.in_f + i]) c = CUDART_INF;
        colmax[l.colmax_at + i] = c;
    }
}

// Linear bounds of f32 boxes in device memory (ibp_propagate_ex, IBP_METHOD_LINEAR): item b's
// bounds are its interval ones [ibp_lo, ibp_hi] (rows values) narrowed by the lower bounds of
// its signed rows (lower: 2·rows per item, row r then its negation at rows + r; with lower2, a
// second set from the other relaxation, the larger of the two) plus the offsets
// d, rounded outward: max(ibp_lo, ↓(l + d)) and min(ibp_hi, ↑(d − u)). A box with an infinite
// bound keeps its interval bounds (the linear-bounds kernel takes finite boxes; box_lo / box_hi
// are the boxes it read); a NaN bound (never expected) narrows nothing. One thread per item and
// row.
__global__ void narrow_kernel(const double *box_lo, const double *box_hi, uint32_t n_in, const double *lower,
                              const double *lower2, const double *d, uint32_t rows, uint64_t batch, const float *ibp_lo,
                              const float *ibp_hi, float *out_lo, float *out_hi) {
    const uint64_t k = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x;
    if (k >= batch * rows) return;
    const uint64_t b = k / rows;
    const uint32_t r = (uint32_t)(k - b * rows);
    bool finite = true;
    for (uint32_t i = 0; i < n_in; i++) finite = finite && isfinite(box_lo[b * n_in + i]) && isfinite(box_hi[b * n_in + i]);
    float lo = ibp_lo[k], hi = ibp_hi[k];
    if (finite) {
        double l = lower[b * 2 * rows + r], u = lower[b * 2 * rows + rows + r];
        if (lower2) {
            l = fmax(l, lower2[b * 2 * rows + r]);
            u = fmax(u, lower2[b * 2 * rows + rows + r]);
        }
        lo = fmaxf(lo, __double2float_rd(__dadd_rd(l, d[r])));
        hi = fminf(hi, __double2float_ru(__dsub_ru(d[r], u)));
    }
    out_lo[k] = lo;
    out_hi[k] = hi;
}

size_t smem_bytes(uint32_t n_layers, uint32_t n_in, uint32_t width, uint32_t total_out, uint32_t rp) {
    size_t doubles = 5ull * total_out + 2ull * n_in + (2ull * rp + 2) * width + 2ull * rp + n_layers;
    size_t ints = (size_t)total_out + n_layers + width + 1;
    return doubles * 8 + ints * 4;
}

}  // namespace

extern "C" int lvk_crown_rows_per_pass(uint32_t n_layers, uint32_t n_in, uint32_t width, uint32_t total_out,
                                       uint32_t textbook, uint32_t *rp, size_t *smem) {
    if (rp == nullptr || smem == nullptr || n_layers == 0 || width == 0 || textbook > 1) return cudaErrorInvalidValue;
    int dev = 0, optin = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e != cudaSuccess) return e;
    // Two rows per unstable neuron: up to 32 rows per pass (few neurons are unstable on the
    // small boxes of a search, and a small buffer lets more boxes share a multiprocessor),
    // fewer while the block's shared memory would not fit. The caller's rows are taken rp at
    // a time.
    // A multiple of 4 (the tiles of through_linear).
    // (On an H200, 16 384 ACAS Xu boxes: 13.6 ms at 16 rows, 11.8 ms at 32, 12.0 at 48, 13.3 ms
    // at 64, where only three blocks fit a multiprocessor.)
    uint32_t want = max(min(2u * width, 32u), 4u);
    // Textbook CROWN bounds every neuron, so its passes are full: as few as fit 26 neurons
    // (52 rows) each, balanced. (On an H200, 16 384 ACAS Xu boxes, width 50, both relaxations:
    // 9.35–9.42 ms at 32 rows, four passes a layer; 8.80–8.83 ms at 52, two passes, though only
    // three blocks then fit a multiprocessor; 10.79–10.84 ms at 100, one pass, two blocks;
    // bench/results/gpu-h200-2026-11-30f/ab-textbook-rows.txt.)
    if (textbook) {
        const uint32_t passes = (width + 25) / 26, per = (width + passes - 1) / passes;
        want = max((2u * per + 3) & ~3u, 4u);
    }
    for (uint32_t r = want & ~3u; r >= 4; r -= 4) {
        size_t b = smem_bytes(n_layers, n_in, width, total_out, r);
        if (b + 64 <= (size_t)optin) {  // (64: the kernel's own shared variables)
            *rp = r;
            *smem = b;
            return cudaSuccess;
        }
    }
    return cudaErrorInvalidConfiguration;
}

extern "C" size_t lvk_crown_guard_bytes(uint32_t total_out, uint32_t width) {
    return guard_doubles(total_out, width) * sizeof(double);
}

extern "C" int lvk_crown_colmax(const lvk_crown_layer *layers, uint32_t n_layers, uint32_t width, double *colmax,
                                void *stream) {
    if (layers == nullptr || colmax == nullptr || n_layers == 0 || n_layers > 65535) return cudaErrorInvalidValue;
    dim3 grid((width + 127) / 128, n_layers);
    colmax_kernel<<<grid, 128, 0, static_cast<cudaStream_t>(stream)>>>(layers, n_layers, colmax);
    return cudaGetLastError();
}

extern "C" int lvk_crown_bounds(const lvk_crown_layer *layers, uint32_t n_layers, uint32_t n_in, uint32_t width,
                                uint32_t total_out, uint32_t rp, size_t smem, const double *colmax, uint32_t batch,
                                const double *lo, const double *hi, const double *rows, uint32_t n_rows, double *lower,
                                double *out_lo, double *out_hi, double *coeffs, double *offsets,
                                const lvk_crown_store *store, uint32_t relaxation, double *guard,
                                uint32_t guard_boxes, void *stream) {
    if (layers == nullptr || colmax == nullptr || lo == nullptr || hi == nullptr || rows == nullptr || lower == nullptr ||
        out_lo == nullptr || out_hi == nullptr || (coeffs == nullptr) != (offsets == nullptr))
        return cudaErrorInvalidValue;
    if (n_layers == 0 || batch == 0 || n_rows == 0 || rp < 4 || rp % 4 || batch > 0x7fffffffu ||
        relaxation > GUARDED || (relaxation == GUARDED && (guard == nullptr || guard_boxes == 0)))
        return cudaErrorInvalidValue;
    Args g = {layers, colmax, n_layers, n_in, width, rp, rows, n_rows, {}, guard, 0};
    if (store) {
        if (store->total_out != total_out) return cudaErrorInvalidValue;
        g.store = *store;
    }
    const cudaStream_t st = static_cast<cudaStream_t>(stream);
    auto launch = [&](auto kernel, uint32_t blocks) -> cudaError_t {
        cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
        kernel<<<blocks, THREADS, smem, st>>>(g, lo, hi, lower, out_lo, out_hi, coeffs, offsets, total_out);
        return cudaGetLastError();
    };
    if (relaxation == TEXTBOOK) return launch(crown_kernel<TEXTBOOK>, batch);
    if (relaxation == INTERSECTED) return launch(crown_kernel<INTERSECTED>, batch);
    // GUARDED: the two passes, guard_boxes boxes at a time (the records' room).
    for (uint64_t first = 0; first < batch; first += guard_boxes) {
        g.box0 = first;
        const uint32_t n = batch - first < guard_boxes ? (uint32_t)(batch - first) : guard_boxes;
        cudaError_t e = launch(crown_kernel<GUARDED>, n);
        if (e == cudaSuccess) e = launch(crown_kernel<RESUME>, n);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

extern "C" int lvk_crown_narrow(const double *box_lo, const double *box_hi, uint32_t n_in, const double *lower,
                                const double *lower2, const double *d, uint32_t rows, uint64_t batch, const float *ibp_lo,
                                const float *ibp_hi, float *out_lo, float *out_hi, void *stream) {
    if (box_lo == nullptr || box_hi == nullptr || lower == nullptr || d == nullptr || ibp_lo == nullptr ||
        ibp_hi == nullptr || out_lo == nullptr || out_hi == nullptr || rows == 0 || batch == 0 ||
        batch > (1ull << 38) / rows)
        return cudaErrorInvalidValue;
    const uint64_t n = batch * rows, blocks = (n + 255) / 256;
    narrow_kernel<<<(unsigned)blocks, 256, 0, static_cast<cudaStream_t>(stream)>>>(
        box_lo, box_hi, n_in, lower, lower2, d, rows, batch, ibp_lo, ibp_hi, out_lo, out_hi);
    return cudaGetLastError();
}
