// RFC 9162 Merkle hashing on the GPU. One block per 1 MiB region of any shard of the batch:
// each thread hashes whole leaves (SHA-256(0x00 ‖ leaf)) with aligned 16-byte loads, then the
// block reduces the region's leaf hashes to the region root in shared memory. Only region
// roots (32 bytes per MiB) leave the device.
#include <cuda_runtime.h>

#include "lvk.h"

#include "sha256.cuh"

namespace {

using namespace lvk_sha;

// One block per region. Dynamic shared memory: max_region_leaves hashes plus half as many
// for the ping-pong reduction.
// 4 blocks of 256 threads per SM (at most 64 registers each): measured fastest of the
// variants in bench/merkle_variants.cu, with no spills.
__global__ void __launch_bounds__(256, 4) region_roots_kernel(const lvk_job *jobs, uint32_t n_jobs, uint32_t max_leaves, uint8_t *roots,
                                                               uint32_t one) {
    extern __shared__ uint32_t smem[];
    uint32_t *level_a = smem;                       // max_leaves × 8 words
    uint32_t *level_b = smem + 8 * max_leaves;      // ceil(max_leaves / 2) × 8 words
    __shared__ uint32_t job_index;

    uint64_t region = blockIdx.x;
    if (threadIdx.x == 0) {
        uint32_t lo = 0, hi = n_jobs; // last job with first_region <= region
        while (hi - lo > 1) {
            uint32_t mid = (lo + hi) / 2;
            if (jobs[mid].first_region <= region) lo = mid; else hi = mid;
        }
        job_index = lo;
    }
    __syncthreads();
    const lvk_job job = jobs[job_index];
    uint64_t local = region - job.first_region;
    uint64_t region_bytes = static_cast<uint64_t>(job.leaf_size) * job.region_leaves;
    uint64_t start = local * region_bytes;
    uint64_t end = start + region_bytes < job.len ? start + region_bytes : job.len;
    uint32_t n = static_cast<uint32_t>((end - start + job.leaf_size - 1) / job.leaf_size);
    bool aligned = (reinterpret_cast<uintptr_t>(job.data) & 15) == 0;

    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
        uint64_t off = start + static_cast<uint64_t>(i) * job.leaf_size;
        uint64_t len = end - off < job.leaf_size ? end - off : job.leaf_size;
        uint32_t h[8];
        hash_prefixed(0x00, job.data + off, len, aligned, one, h);
#pragma unroll
        for (int k = 0; k < 8; k++) level_a[8 * i + k] = h[k];
    }
    __syncthreads();

    // Bottom-up with the odd last node promoted unchanged: this builds exactly the RFC 9162
    // tree (left subtrees are the largest powers of two).
    uint32_t *src = level_a, *dst = level_b;
    while (n > 1) {
        uint32_t pairs = n / 2;
        for (uint32_t i = threadIdx.x; i < pairs; i += blockDim.x) {
            uint32_t h[8];
            node_hash(src + 16 * i, src + 16 * i + 8, one, h);
#pragma unroll
            for (int k = 0; k < 8; k++) dst[8 * i + k] = h[k];
        }
        if ((n & 1) && threadIdx.x == 0) {
#pragma unroll
            for (int k = 0; k < 8; k++) dst[8 * pairs + k] = src[8 * (n - 1) + k];
        }
        __syncthreads();
        uint32_t *t = src; src = dst; dst = t;
        n = pairs + (n & 1);
    }
    if (threadIdx.x < 8) {
        uint32_t v = src[threadIdx.x];
        uint8_t *o = roots + 32 * region + 4 * threadIdx.x;
        o[0] = v >> 24; o[1] = v >> 16; o[2] = v >> 8; o[3] = v;
    }
}

} // namespace

extern "C" int lvk_region_roots(const lvk_job *jobs, uint32_t n_jobs, uint64_t total_regions,
                                uint32_t max_region_leaves, uint8_t *roots, void *stream) {
    if (jobs == nullptr || roots == nullptr || n_jobs == 0 || total_regions == 0) return cudaErrorInvalidValue;
    if (max_region_leaves == 0 || max_region_leaves > 1024 || total_regions > 0x7fffffffull) return cudaErrorInvalidValue;
    // Leaves are hashed one per thread; 256 threads keep several blocks resident per SM.
    uint32_t threads = max_region_leaves < 256 ? (max_region_leaves < 32 ? 32 : max_region_leaves) : 256;
    // Up to 1024 + 512 hashes = 48 KiB, which with the kernel's static shared memory exceeds
    // the default 48 KiB limit: opt in to more (every supported GPU has at least 99 KiB).
    size_t smem = 32u * (static_cast<size_t>(max_region_leaves) + (max_region_leaves + 1) / 2);
    if (smem > 32 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(region_roots_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem));
        if (e != cudaSuccess) return e;
    }
    region_roots_kernel<<<static_cast<unsigned>(total_regions), threads, smem, static_cast<cudaStream_t>(stream)>>>(
        jobs, n_jobs, max_region_leaves, roots, 1u);
    return cudaGetLastError();
}
