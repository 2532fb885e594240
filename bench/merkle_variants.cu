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
            node_hash(src + 16 * i, src + 16 * i + 8, h);
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

// A: fused, one block per region (as libvram today), occupancy left to the compiler.
template <int MINB>
__global__ void __launch_bounds__(256, MINB) fused(const uint8_t *data, uint8_t *roots) {
    __shared__ uint32_t a[R * 8], b[R / 2 * 8];
    const uint8_t *base = data + (uint64_t)blockIdx.x * R * LEAF;
    uint32_t h[8];
    hash_prefixed(0, base + (uint64_t)threadIdx.x * LEAF, LEAF, true, h);
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
    hash_prefixed(0, data + i * LEAF, LEAF, true, h);
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

int main() {
    const uint64_t bytes = 8ull << 30, regions = bytes >> 20, nleaves = bytes / LEAF;
    uint8_t *data; uint8_t *roots[8]; uint32_t *scratch;
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
    int agree = 1;
    std::vector<uint8_t> ref(regions * 32), got(regions * 32);
    CK(cudaMemcpy(ref.data(), roots[0], ref.size(), cudaMemcpyDeviceToHost));
    for (int s = 1; s < 7; s++) { CK(cudaMemcpy(got.data(), roots[s], got.size(), cudaMemcpyDeviceToHost)); agree &= ref == got; }
    printf("all variants agree on every region root: %s\n", agree ? "yes" : "NO");
    return agree ? 0 : 1;
}
