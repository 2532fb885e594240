// Kernel design study for the Merkle hash (not part of libvram): times variants of the
// region-root computation on the same 8 GiB of random device bytes, checks they agree on every
// root, and prints GB/s. Built and run on the GPU machine by scripts/gpu-run.sh:
//   nvcc -O3 -std=c++17 -arch=sm_90 -Icuda bench/merkle_variants.cu -o merkle_variants
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>

#include "sha256.cuh"

using namespace lvk_sha;

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(1); } } while (0)

constexpr uint32_t LEAF = 4096, R = 256; // leaves per 1 MiB region

__device__ void reduce_block(uint32_t *a, uint32_t *b, uint32_t n, uint8_t *out) {
    uint32_t *src = a, *dst = b;
    while (n > 1) {
        uint32_t pairs = n / 2;
        for (uint32_t i = threadIdx.x; i < pairs; i += blockDim.x) {
            uint32_t h[8];
            node_hash(src + 16 * i, src + 16 * i + 8, 1u, h);
            for (int k = 0; k < 8; k++) dst[8 * i + k] = h[k];
        }
        if ((n & 1) && threadIdx.x == 0) for (int k = 0; k < 8; k++) dst[8 * pairs + k] = src[8 * (n - 1) + k];
        __syncthreads();
        uint32_t *t = src; src = dst; dst = t;
        n = pairs + (n & 1);
    }
    if (threadIdx.x < 8) {
        uint32_t v = src[threadIdx.x];
        uint8_t *o = out + 4 * threadIdx.x;
        o[0] = v >> 24; o[1] = v >> 16; o[2] = v >> 8; o[3] = v;
    }
}

// A: fused, one block per region (libvram's design; sha256.cuh now issues its adds as IMAD,
// so A and B include that change and C isolates it), occupancy left to the compiler.
template <int MINB>
__global__ void __launch_bounds__(256, MINB) fused(const uint8_t *data, uint8_t *roots) {
    __shared__ uint32_t a[R * 8], b[R / 2 * 8];
    const uint8_t *base = data + (uint64_t)blockIdx.x * R * LEAF;
    uint32_t h[8];
    hash_prefixed(0, base + (uint64_t)threadIdx.x * LEAF, LEAF, true, 1u, h);
    for (int k = 0; k < 8; k++) a[8 * threadIdx.x + k] = h[k];
    __syncthreads();
    reduce_block(a, b, R, roots + 32 * (uint64_t)blockIdx.x);
}

// B: leaves only, one thread per leaf, no barriers; then a separate reduction kernel.
template <int TPB, int MINB>
__global__ void __launch_bounds__(TPB, MINB) leaves(const uint8_t *data, uint64_t n, uint32_t *out) {
    uint64_t i = (uint64_t)blockIdx.x * TPB + threadIdx.x;
    if (i >= n) return;
    uint32_t h[8];
    hash_prefixed(0, data + i * LEAF, LEAF, true, 1u, h);
    uint4 *o = reinterpret_cast<uint4 *>(out + 8 * i);
    o[0] = make_uint4(h[0], h[1], h[2], h[3]);
    o[1] = make_uint4(h[4], h[5], h[6], h[7]);
}

__global__ void reduce(const uint32_t *leaf_hashes, uint8_t *roots) {
    __shared__ uint32_t a[R * 8], b[R / 2 * 8];
    const uint32_t *src = leaf_hashes + (uint64_t)blockIdx.x * R * 8;
    for (uint32_t i = threadIdx.x; i < R * 8; i += blockDim.x) a[i] = src[i];
    __syncthreads();
    reduce_block(a, b, R, roots + 32 * (uint64_t)blockIdx.x);
}

// C: SHA-256 with 0 (MODE 0: t1, e), 1 (also t2: libvram's choice) or 2 (also the message
// schedule) of its additions issued as IMAD through lvk_sha::madd, on the FMA pipe.
template <int MODE>
__device__ __forceinline__ void compress_mix(uint32_t s[8], uint32_t w[16], uint32_t one) {
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
#pragma unroll
    for (int i = 0; i < 64; i++) {
        uint32_t wi;
        if (i < 16) {
            wi = w[i];
        } else {
            uint32_t w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
            uint32_t s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3);
            uint32_t s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10);
            if (MODE >= 2) wi = w[i & 15] = madd(madd(w[i & 15], s0, one), madd(w[(i - 7) & 15], s1, one), one);
            else wi = w[i & 15] = w[i & 15] + s0 + w[(i - 7) & 15] + s1;
        }
        uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = g ^ (e & (f ^ g));
        uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) | (c & (a | b));
        uint32_t t1 = madd(madd(h, S1, one), madd(ch, K[i], one), one) + wi;
        uint32_t t2 = MODE >= 1 ? madd(S0, maj, one) : S0 + maj;
        h = g; g = f; f = e; e = madd(d, t1, one); d = c; c = b; b = a; a = t1 + t2;
    }
    s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

template <int MODE>
__global__ void __launch_bounds__(128, 8) leaves_mix(const uint8_t *data, uint64_t n, uint32_t *out, uint32_t one) {
    uint64_t i = (uint64_t)blockIdx.x * 128 + threadIdx.x;
    if (i >= n) return;
    uint32_t s[8];
    init_state(s);
    uint32_t carry = 0;
    const uint4 *q = reinterpret_cast<const uint4 *>(data + i * LEAF);
    for (uint32_t j = 0; j < LEAF / 64; j++) {
        uint4 a = __ldg(q + 4 * j), b = __ldg(q + 4 * j + 1), c = __ldg(q + 4 * j + 2), d = __ldg(q + 4 * j + 3);
        uint32_t w[16] = {shifted_be(carry, a.x), shifted_be(a.x, a.y), shifted_be(a.y, a.z), shifted_be(a.z, a.w),
                          shifted_be(a.w, b.x), shifted_be(b.x, b.y), shifted_be(b.y, b.z), shifted_be(b.z, b.w),
                          shifted_be(b.w, c.x), shifted_be(c.x, c.y), shifted_be(c.y, c.z), shifted_be(c.z, c.w),
                          shifted_be(c.w, d.x), shifted_be(d.x, d.y), shifted_be(d.y, d.z), shifted_be(d.z, d.w)};
        carry = d.w;
        compress_mix<MODE>(s, w, one);
    }
    uint32_t w[16] = {(carry & 0xff000000u) | 0x00800000u, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (LEAF + 1) * 8};
    compress_mix<MODE>(s, w, one);
    uint4 *o = reinterpret_cast<uint4 *>(out + 8 * i);
    o[0] = make_uint4(s[0], s[1], s[2], s[3]);
    o[1] = make_uint4(s[4], s[5], s[6], s[7]);
}

int main() {
    const uint64_t bytes = 8ull << 30, regions = bytes >> 20, nleaves = bytes / LEAF;
    uint8_t *data; uint8_t *roots[10]; uint32_t *scratch;
    CK(cudaMalloc(&data, bytes));
    CK(cudaMalloc(&scratch, nleaves * 32));
    std::vector<uint8_t> host(1 << 30);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < host.size(); i += 8) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; memcpy(&host[i], &x, 8); }
    for (uint64_t off = 0; off < bytes; off += host.size()) { host[0]++; CK(cudaMemcpy(data + off, host.data(), host.size(), cudaMemcpyHostToDevice)); }
    for (auto &r : roots) CK(cudaMalloc(&r, regions * 32));
    cudaEvent_t t0, t1; CK(cudaEventCreate(&t0)); CK(cudaEventCreate(&t1));
    struct V { const char *name; int slot; };
    auto run = [&](const char *name, int slot, auto launch) {
        std::vector<float> ms;
        for (int it = 0; it < 8; it++) {
            CK(cudaEventRecord(t0)); launch(roots[slot]); CK(cudaEventRecord(t1)); CK(cudaEventSynchronize(t1));
            CK(cudaGetLastError());
            float m; CK(cudaEventElapsedTime(&m, t0, t1)); if (it) ms.push_back(m);
        }
        std::sort(ms.begin(), ms.end());
        printf("| %-58s | %7.1f |\n", name, bytes / 1e9 / (ms[ms.size() / 2] / 1e3));
    };
    printf("| variant (8 GiB, 4 KiB leaves, 1 MiB regions) | GB/s |\n|---|---|\n");
    run("A fused, 256 thr/block (libvram v1)", 0, [&](uint8_t *r) { fused<1><<<regions, 256>>>(data, r); });
    run("A fused, __launch_bounds__(256,3)", 1, [&](uint8_t *r) { fused<3><<<regions, 256>>>(data, r); });
    run("A fused, __launch_bounds__(256,4)", 2, [&](uint8_t *r) { fused<4><<<regions, 256>>>(data, r); });
    run("B leaves 128 thr + reduce", 3, [&](uint8_t *r) { leaves<128, 1><<<(nleaves + 127) / 128, 128>>>(data, nleaves, scratch); reduce<<<regions, 128>>>(scratch, r); });
    run("B leaves 128 thr, launch_bounds(128,8) + reduce", 4, [&](uint8_t *r) { leaves<128, 8><<<(nleaves + 127) / 128, 128>>>(data, nleaves, scratch); reduce<<<regions, 128>>>(scratch, r); });
    run("B leaves 64 thr, launch_bounds(64,16) + reduce", 5, [&](uint8_t *r) { leaves<64, 16><<<(nleaves + 63) / 64, 64>>>(data, nleaves, scratch); reduce<<<regions, 128>>>(scratch, r); });
    run("B leaves 256 thr, launch_bounds(256,3) + reduce", 6, [&](uint8_t *r) { leaves<256, 3><<<(nleaves + 255) / 256, 256>>>(data, nleaves, scratch); reduce<<<regions, 128>>>(scratch, r); });
    uint32_t one = 1;
    run("C leaves 128, t1/e adds as IMAD + reduce", 7, [&](uint8_t *r) { leaves_mix<0><<<(nleaves + 127) / 128, 128>>>(data, nleaves, scratch, one); reduce<<<regions, 128>>>(scratch, r); });
    run("C leaves 128, t1/e/t2 adds as IMAD + reduce", 8, [&](uint8_t *r) { leaves_mix<1><<<(nleaves + 127) / 128, 128>>>(data, nleaves, scratch, one); reduce<<<regions, 128>>>(scratch, r); });
    run("C leaves 128, all adds incl. schedule as IMAD + reduce", 9, [&](uint8_t *r) { leaves_mix<2><<<(nleaves + 127) / 128, 128>>>(data, nleaves, scratch, one); reduce<<<regions, 128>>>(scratch, r); });
    int agree = 1;
    std::vector<uint8_t> ref(regions * 32), got(regions * 32);
    CK(cudaMemcpy(ref.data(), roots[0], ref.size(), cudaMemcpyDeviceToHost));
    for (int s = 1; s < 10; s++) { CK(cudaMemcpy(got.data(), roots[s], got.size(), cudaMemcpyDeviceToHost)); agree &= ref == got; }
    printf("all variants agree on every region root: %s\n", agree ? "yes" : "NO");
    return agree ? 0 : 1;
}
