// The scrubber's fast detection tier on the GPU (src/scrub/digest.rs defines the hash): a
// keyed polynomial hash modulo 2^61 − 1 of every 1 MiB region, evaluated by a persistent grid
// of `blocks` blocks so that a scrub occupies at most that many SMs and the serving kernels
// keep the rest. Each warp hashes whole 4 KiB chunks (8 coalesced 16-byte loads per lane, all
// issued before any arithmetic), the block adds its warps' weighted chunk values, and one
// 8-byte digest per region leaves the device.
#include <cuda_runtime.h>

#include "lvk.h"

namespace {

constexpr uint64_t P = (1ull << 61) - 1;
constexpr uint32_t CHUNK = 4096;
constexpr uint32_t REGION = 1u << 20;
constexpr int LANE_POWERS = 129;
// A block fills an SM (1024 threads at 64 registers: the whole register file), so `blocks`
// blocks occupy at most that many SMs. Beside a GEMV on an H200 one block hashes about
// 17 GB/s (bench/results/gpu-h200-2026-11-29-scrubber/), about as fast as 512 threads did:
// the 64-bit multiplies, not memory latency, bound it.
constexpr int WARPS = 32;

__device__ __forceinline__ uint64_t fold(uint64_t lo, uint64_t hi) {
    // hi·2^64 + lo with hi < 2^58: 2^64 ≡ 8 (mod p).
    uint64_t x = (lo & P) + (lo >> 61) + (hi << 3);
    x = (x & P) + (x >> 61);
    return x >= P ? x - P : x;
}

__device__ __forceinline__ uint64_t mulmod(uint64_t a, uint64_t b) {
    return fold(a * b, __umul64hi(a, b));
}

__device__ __forceinline__ uint64_t addmod(uint64_t a, uint64_t b) {
    uint64_t s = a + b;
    return s >= P ? s - P : s;
}

// Σ w_q · pw_q as a 128-bit value (each term < 2^93), reduced.
__device__ __forceinline__ uint64_t weigh(uint4 v, const uint64_t pw[4]) {
    uint64_t lo = 0, hi = 0;
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int q = 0; q < 4; q++) {
        uint64_t plo = static_cast<uint64_t>(w[q]) * pw[q];
        uint64_t phi = __umul64hi(static_cast<uint64_t>(w[q]), pw[q]);
        lo += plo;
        hi += phi + (lo < plo ? 1 : 0);
    }
    return fold(lo, hi);
}

// Bytes of a partial or unaligned chunk, one at a time, zero past `valid` (rare: the last
// chunk of a shard, or a shard not 16-byte aligned).
__device__ __noinline__ uint4 load_bytes(const uint8_t *chunk, uint32_t off, uint32_t valid) {
    uint8_t b[16];
#pragma unroll
    for (int k = 0; k < 16; k++) b[k] = off + k < valid ? chunk[off + k] : 0;
    uint4 v;
    v.x = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
    v.y = b[4] | (b[5] << 8) | (b[6] << 16) | (static_cast<uint32_t>(b[7]) << 24);
    v.z = b[8] | (b[9] << 8) | (b[10] << 16) | (static_cast<uint32_t>(b[11]) << 24);
    v.w = b[12] | (b[13] << 8) | (b[14] << 16) | (static_cast<uint32_t>(b[15]) << 24);
    return v;
}

__device__ __forceinline__ uint4 load_chunk_word4(const uint8_t *chunk, uint32_t off, uint32_t valid, bool fast) {
    // Streaming loads: the scrub must not evict the serving kernels' data from L2.
    if (fast) return __ldcs(reinterpret_cast<const uint4 *>(chunk + off));
    return load_bytes(chunk, off, valid);
}

__global__ void __launch_bounds__(32 * WARPS, 1)
fast_digest_kernel(const lvk_job *jobs, uint32_t n_jobs, uint64_t total, const uint64_t *powers,
                   uint64_t *digests) {
    __shared__ uint64_t warp_sum[WARPS];
    __shared__ uint32_t job_index;
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t pw[4];
#pragma unroll
    for (int q = 0; q < 4; q++) pw[q] = powers[128 - 4 * lane - q];
    const uint64_t stride = powers[128];
    const uint64_t *chunk_pow = powers + LANE_POWERS;

    for (uint64_t region = blockIdx.x; region < total; region += gridDim.x) {
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
        const uint64_t start = (region - job.first_region) * REGION;
        const uint32_t bytes = static_cast<uint32_t>(job.len - start < REGION ? job.len - start : REGION);
        const uint32_t chunks = (bytes + CHUNK - 1) / CHUNK;
        const bool aligned = (reinterpret_cast<uintptr_t>(job.data) & 15) == 0;
        uint64_t mine = 0;
        for (uint32_t c = warp; c < chunks; c += WARPS) {
            const uint8_t *chunk = job.data + start + static_cast<uint64_t>(c) * CHUNK;
            const uint32_t valid = bytes - c * CHUNK < CHUNK ? bytes - c * CHUNK : CHUNK;
            const bool fast = aligned && valid == CHUNK;
            uint4 v[8];
#pragma unroll
            for (int t = 0; t < 8; t++) v[t] = load_chunk_word4(chunk, 512 * t + 16 * lane, valid, fast);
            uint64_t acc = 0;
#pragma unroll
            for (int t = 0; t < 8; t++) acc = addmod(mulmod(acc, stride), weigh(v[t], pw));
#pragma unroll
            for (int s = 16; s > 0; s >>= 1) acc = addmod(acc, __shfl_xor_sync(0xffffffffu, acc, s));
            mine = addmod(mine, mulmod(acc, chunk_pow[chunks - 1 - c]));
        }
        if (lane == 0) warp_sum[warp] = mine;
        __syncthreads();
        if (threadIdx.x == 0) {
            uint64_t d = 0;
#pragma unroll
            for (int w = 0; w < WARPS; w++) d = addmod(d, warp_sum[w]);
            digests[region] = d;
        }
        // warp_sum and job_index are reused by the next region.
        __syncthreads();
    }
}

} // namespace

extern "C" int lvk_fast_digests(const lvk_job *jobs, uint32_t n_jobs, uint64_t total_regions,
                                const uint64_t *powers, uint64_t *digests, uint32_t blocks,
                                void *stream) {
    if (jobs == nullptr || powers == nullptr || digests == nullptr || n_jobs == 0 || total_regions == 0 ||
        blocks == 0)
        return cudaErrorInvalidValue;
    uint64_t grid = blocks < total_regions ? blocks : total_regions;
    fast_digest_kernel<<<static_cast<unsigned>(grid), 32 * WARPS, 0, static_cast<cudaStream_t>(stream)>>>(
        jobs, n_jobs, total_regions, powers, digests);
    return cudaGetLastError();
}

extern "C" int lvk_sm_count(int *count) {
    if (count == nullptr) return cudaErrorInvalidValue;
    int device = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess) return e;
    return cudaDeviceGetAttribute(count, cudaDevAttrMultiProcessorCount, device);
}
