// Serving-overhead benchmark of the background scrubber (issue 12): a decode-like memory-bound
// workload (batch-8 fp16 GEMV over every weight tensor, on a high-priority stream) runs over a
// sealed model of --gib GiB held in the workload's own cudaMalloc buffers (sealed in place),
// alone and with a scrubber at several budgets; then bit flips written with cudaMemcpy while the
// workload runs are timed to the damage callback; then a restore; then (--clean-seconds) a long
// clean run that must see no report. Prints Markdown. Exit status 0 unless something failed.
//
//   scrub_serving [--gib 64] [--seconds 6] [--sms 1,2,3,4,8,16,4:1000,8:0:48] [--flip-sms 2]
//                 [--flips 100] [--clean-seconds 0] [--clean-sms 2]
// A budget is SMs[:target pass period in ms[:byte rate cap in GB/s]].
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "vram.h"

namespace {

constexpr int BATCH = 8;
constexpr int K = 8192;     // inputs
constexpr int N = 32768;    // outputs per tensor: 512 MiB of fp16 weights
constexpr int ROWS_PER_WARP = 2;
constexpr int UNROLL = 4; // steps of weights in flight per warp
constexpr size_t TENSOR_BYTES = size_t(N) * K * 2;

#define CK(x)                                                                              \
    do {                                                                                   \
        cudaError_t e_ = (x);                                                              \
        if (e_ != cudaSuccess) {                                                           \
            std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            std::exit(2);                                                                  \
        }                                                                                  \
    } while (0)
#define VK(x)                                                                              \
    do {                                                                                   \
        vram_status s_ = (x);                                                              \
        if (s_ != VRAM_OK) {                                                               \
            char m_[VRAM_MAX_ERROR_MESSAGE + 1];                                           \
            vram_last_error_message(m_, sizeof m_);                                        \
            std::fprintf(stderr, "%s:%d %s: %s: %s\n", __FILE__, __LINE__, #x, vram_status_str(s_), m_); \
            std::exit(3);                                                                  \
        }                                                                                  \
    } while (0)

__global__ void fill(uint4 *p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
        // Small fp16 values (exponent kept low) so the GEMV never overflows.
        uint32_t v = (h & 0x03ff03ffu) | 0x20002000u;
        p[i] = make_uint4(v, v ^ 0x00010001u, v ^ 0x00020002u, v ^ 0x00030003u);
    }
}

// y[b][n] = Σ_k W[n][k] · x[b][k]: one warp per ROWS_PER_WARP rows, 16-byte loads of W
// (coalesced across the warp), half2 products summed into float.
__global__ void __launch_bounds__(256) gemv(const uint4 *__restrict__ w, const uint4 *__restrict__ x,
                                            float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int row0 = (blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * ROWS_PER_WARP;
    float acc[ROWS_PER_WARP][BATCH] = {};
    // UNROLL steps' weights are loaded before any is used: bytes in flight per warp are what
    // keep HBM busy (measured on an H200: 2.55 TB/s with one step of 4 rows in flight).
    for (int i0 = lane; i0 < K / 8; i0 += 32 * UNROLL) {
        uint4 wv2[UNROLL][ROWS_PER_WARP];
#pragma unroll
        for (int u = 0; u < UNROLL; u++)
#pragma unroll
            for (int r = 0; r < ROWS_PER_WARP; r++)
                wv2[u][r] = __ldcs(w + size_t(row0 + r) * (K / 8) + i0 + 32 * u);
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
        const int i = i0 + 32 * u;
        const uint4 *wv = wv2[u];
#pragma unroll
        for (int b = 0; b < BATCH; b++) {
            uint4 xv = __ldg(x + b * (K / 8) + i);
#pragma unroll
            for (int r = 0; r < ROWS_PER_WARP; r++) {
                __half2 h = __hmul2(*reinterpret_cast<const __half2 *>(&wv[r].x), *reinterpret_cast<const __half2 *>(&xv.x));
                h = __hfma2(*reinterpret_cast<const __half2 *>(&wv[r].y), *reinterpret_cast<const __half2 *>(&xv.y), h);
                h = __hfma2(*reinterpret_cast<const __half2 *>(&wv[r].z), *reinterpret_cast<const __half2 *>(&xv.z), h);
                h = __hfma2(*reinterpret_cast<const __half2 *>(&wv[r].w), *reinterpret_cast<const __half2 *>(&xv.w), h);
                float2 f = __half22float2(h);
                acc[r][b] += f.x + f.y;
            }
        }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++)
#pragma unroll
        for (int b = 0; b < BATCH; b++) {
            float v = acc[r][b];
            for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
            if (lane == 0) y[b * N + row0 + r] = v;
        }
}

struct Report {
    std::string id;
    std::vector<uint64_t> offsets;
    std::chrono::steady_clock::time_point at;
};

struct Sink {
    std::mutex m;
    std::condition_variable cv;
    std::vector<Report> reports;
};

void on_damage(void *user, const vram_shard *, const char *id, const uint64_t *offsets, size_t n) {
    auto *s = static_cast<Sink *>(user);
    Report r{id, std::vector<uint64_t>(offsets, offsets + n), std::chrono::steady_clock::now()};
    std::lock_guard<std::mutex> g(s->m);
    s->reports.push_back(std::move(r));
    s->cv.notify_all();
}

struct Workload {
    std::vector<uint4 *> weights;
    uint4 *x = nullptr;
    float *y = nullptr;
    cudaStream_t stream = nullptr;
    // One decode step: every tensor once. Returns bytes of weights read.
    size_t step() {
        const int warps = N / ROWS_PER_WARP, threads = 256, blocks = warps / (threads / 32);
        for (uint4 *w : weights) gemv<<<blocks, threads, 0, stream>>>(w, x, y);
        CK(cudaGetLastError());
        CK(cudaStreamSynchronize(stream));
        return weights.size() * TENSOR_BYTES;
    }
    // Weight bytes per second over `seconds` (whole steps).
    double run_for(double seconds) {
        auto t0 = std::chrono::steady_clock::now();
        size_t bytes = 0;
        double el = 0;
        do {
            bytes += step();
            el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        } while (el < seconds);
        return bytes / el;
    }
};

vram_scrub_stats stats_of(vram_scrubber *s) {
    vram_scrub_stats st;
    std::memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    VK(vram_scrubber_stats(s, &st));
    return st;
}

struct Budget {
    uint32_t sms;
    uint32_t period_ms; // 0: passes back to back
    uint32_t rate_gbs;  // 0: no byte-rate cap
};

vram_scrubber *start_scrubber(vram_ctx *ctx, const std::vector<vram_shard *> &shards, Budget b, Sink *sink) {
    vram_scrubber_options o;
    std::memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.max_sms = b.sms;
    o.pass_period_ns = uint64_t(b.period_ms) * 1000000ull;
    o.max_bytes_per_second = uint64_t(b.rate_gbs) * 1000000000ull;
    o.on_damage = on_damage;
    o.userdata = sink;
    std::vector<const vram_shard *> list(shards.begin(), shards.end());
    vram_scrubber *s = nullptr;
    VK(vram_scrubber_new(ctx, list.data(), list.size(), &o, &s));
    return s;
}

// Waits until `n` more passes have completed; returns the mean duration of those passes.
double wait_passes(vram_scrubber *s, uint64_t n) {
    uint64_t p0 = stats_of(s).passes;
    auto t0 = std::chrono::steady_clock::now();
    while (stats_of(s).passes < p0 + n) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(n);
}

// "2,4,8:1000,8:0:48" -> {2}, {4}, {8, 1000 ms}, {8, no period, 48 GB/s}
// (SMs[:pass period in ms[:byte rate in GB/s]]).
std::vector<Budget> parse_list(const char *s) {
    std::vector<Budget> v;
    for (const char *p = s; *p;) {
        char *end = nullptr;
        Budget b{uint32_t(std::strtoul(p, &end, 10)), 0, 0};
        p = end;
        if (*p == ':') b.period_ms = uint32_t(std::strtoul(p + 1, &end, 10)), p = end;
        if (*p == ':') b.rate_gbs = uint32_t(std::strtoul(p + 1, &end, 10)), p = end;
        if (end == nullptr || (*p != ',' && *p != 0)) break;
        v.push_back(b);
        if (*p == ',') p++;
    }
    return v;
}

} // namespace

int main(int argc, char **argv) {
    int gib = 64, flips = 100;
    double seconds = 6, clean_seconds = 0;
    Budget flip_sms{2, 0, 0}, clean_sms{2, 0, 0};
    std::vector<Budget> budgets = parse_list("1,2,3,4,8,16");
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--gib") gib = std::atoi(argv[i + 1]);
        else if (a == "--seconds") seconds = std::atof(argv[i + 1]);
        else if (a == "--sms") budgets = parse_list(argv[i + 1]);
        else if (a == "--flips") flips = std::atoi(argv[i + 1]);
        else if (a == "--flip-sms") flip_sms = parse_list(argv[i + 1]).at(0);
        else if (a == "--clean-seconds") clean_seconds = std::atof(argv[i + 1]);
        else if (a == "--clean-sms") clean_sms = parse_list(argv[i + 1]).at(0);
    }
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("SKIPPED: no GPU\n");
        return 0;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    int lo = 0, hi = 0;
    CK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    Workload wl;
    CK(cudaStreamCreateWithPriority(&wl.stream, cudaStreamNonBlocking, hi));
    const int tensors = gib * 2;
    std::printf("# Scrubber serving overhead\n\n%s, %d SMs; model: %d fp16 tensors of %d x %d (%.1f GiB), sealed in place;\n"
                "workload: batch-%d GEMV over every tensor per step, on a stream of priority %d (highest)\n\n",
                prop.name, prop.multiProcessorCount, tensors, N, K, tensors * TENSOR_BYTES / double(1ull << 30), BATCH, hi);
    for (int t = 0; t < tensors; t++) {
        uint4 *p = nullptr;
        CK(cudaMalloc(&p, TENSOR_BYTES));
        fill<<<1024, 256>>>(p, TENSOR_BYTES / 16, 0x9e3779b9u * uint32_t(t + 1));
        wl.weights.push_back(p);
    }
    CK(cudaMalloc(&wl.x, BATCH * K * 2));
    fill<<<64, 256>>>(wl.x, BATCH * K * 2 / 16, 7);
    CK(cudaMalloc(&wl.y, BATCH * N * 4));
    CK(cudaDeviceSynchronize());

    static const uint8_t secret[32] = "scrub serving benchmark secret!";
    vram_ctx_options co;
    std::memset(&co, 0, sizeof co);
    co.struct_size = sizeof co;
    co.backend = VRAM_BACKEND_CUDA;
    co.key = secret;
    co.key_len = sizeof secret;
    vram_ctx *ctx = nullptr;
    VK(vram_ctx_new(&co, &ctx));
    std::vector<vram_shard *> shards(tensors);
    auto ts0 = std::chrono::steady_clock::now();
    for (int t = 0; t < tensors; t++) {
        char name[64];
        std::snprintf(name, sizeof name, "layers.%d.weight", t);
        VK(vram_seal_device(ctx, name, wl.weights[t], TENSOR_BYTES, &shards[t]));
    }
    double seal_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts0).count();
    std::printf("sealed in place in %.3f s\n\n", seal_s);
    wl.run_for(1.0); // warm-up

    int failures = 0;
    Sink sink;
    // 1. Budgets: alone, then with the scrubber (passes back to back), for each budget.
    std::printf("## Workload throughput with the scrubber at each budget\n\n"
                "Each row: the workload alone for %.0f s, then with the scrubber for %.0f s (started and "
                "given one pass first); pass time is the mean over the passes that completed while the "
                "workload ran (with a target period, the scrubber idles between passes).\n\n"
                "| SMs | target period | rate cap | alone GB/s | with scrubber GB/s | kept | pass every (s) | last pass took (s) |\n"
                "|---|---|---|---|---|---|---|---|\n",
                seconds, seconds);
    for (Budget b : budgets) {
        double alone = wl.run_for(seconds);
        vram_scrubber *s = start_scrubber(ctx, shards, b, &sink);
        wait_passes(s, 1);
        uint64_t p0 = stats_of(s).passes;
        auto t0 = std::chrono::steady_clock::now();
        double with = wl.run_for(seconds);
        double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        vram_scrub_stats st = stats_of(s);
        uint64_t passes = st.passes - p0;
        double pass = passes > 0 ? el / double(passes) : st.last_pass_ns / 1e9;
        char period[32] = "none";
        if (b.period_ms != 0) std::snprintf(period, sizeof period, "%.3f s", b.period_ms / 1e3);
        char rate[32] = "none";
        if (b.rate_gbs != 0) std::snprintf(rate, sizeof rate, "%u GB/s", b.rate_gbs);
        std::printf("| %u | %s | %s | %.0f | %.0f | %.1f %% | %.3f%s | %.3f |\n", st.budget, period, rate, alone / 1e9, with / 1e9,
                    100 * with / alone, pass, passes > 0 ? "" : " (last)", st.last_pass_ns / 1e9);
        std::fflush(stdout);
        if (st.errors != 0 || st.damage_reports != 0) {
            std::printf("FAILED: %llu errors, %llu damage reports on a clean model\n", (unsigned long long)st.errors,
                        (unsigned long long)st.damage_reports);
            failures++;
        }
        vram_scrubber_free(s);
    }

    // 2. Bit flips written with cudaMemcpy while the workload runs.
    std::atomic<bool> stop{false};
    std::atomic<size_t> wl_bytes{0};
    double clean_total = 0;
    size_t false_reports = 0;
    if (flips > 0) {
        vram_scrubber *s = start_scrubber(ctx, shards, flip_sms, &sink);
        wait_passes(s, 1);
        std::thread worker([&] {
            while (!stop.load()) wl_bytes += wl.step();
        });
        std::mt19937_64 rng(20261129);
        std::vector<double> latency, periods;
        int caught = 0, prev = -1;
        auto flips_t0 = std::chrono::steady_clock::now();
        for (int f = 0; f < flips; f++) {
            int t;
            do t = int(rng() % tensors); while (t == prev);
            prev = t;
            uint64_t off = rng() % TENSOR_BYTES;
            uint8_t bit = uint8_t(1u << (rng() % 8)), byte = 0;
            uint8_t *p = reinterpret_cast<uint8_t *>(wl.weights[t]) + off;
            size_t before;
            {
                std::lock_guard<std::mutex> g(sink.m);
                before = sink.reports.size();
            }
            // The pass period: the last pass's duration, or the target period when longer.
            double period = std::max(stats_of(s).last_pass_ns / 1e9, flip_sms.period_ms / 1e3);
            CK(cudaMemcpy(&byte, p, 1, cudaMemcpyDeviceToHost));
            byte ^= bit;
            auto t0 = std::chrono::steady_clock::now();
            CK(cudaMemcpy(p, &byte, 1, cudaMemcpyHostToDevice));
            Report got;
            bool ok;
            {
                std::unique_lock<std::mutex> g(sink.m);
                ok = sink.cv.wait_for(g, std::chrono::duration<double>(std::max(10.0, 4 * period)),
                                      [&] { return sink.reports.size() > before; });
                if (ok) got = sink.reports[before];
            }
            byte ^= bit;
            CK(cudaMemcpy(p, &byte, 1, cudaMemcpyHostToDevice)); // undo
            char want[64];
            std::snprintf(want, sizeof want, "layers.%d.weight", t);
            uint64_t region = off & ~((1ull << 20) - 1);
            if (ok && got.id == want && got.offsets.size() == 1 && got.offsets[0] == region) {
                double l = std::chrono::duration<double>(got.at - t0).count();
                latency.push_back(l);
                periods.push_back(period);
                caught++;
                if (l > 2 * period) {
                    std::printf("flip %d: reported after %.3f s, more than 2 pass periods (%.3f s)\n", f, l, period);
                }
            } else {
                std::printf("FAILED flip %d (%s byte %llu bit %u): %s\n", f, want, (unsigned long long)off, unsigned(bit),
                            ok ? ("wrong report: " + got.id).c_str() : "no report");
                if (ok) false_reports++;
            }
        }
        double flips_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - flips_t0).count();
        // Wait for the undo of the last flip to be seen, then check nothing else was reported.
        wait_passes(s, 2);
        {
            std::lock_guard<std::mutex> g(sink.m);
            false_reports += sink.reports.size() - size_t(caught) - false_reports;
        }
        stop = true;
        worker.join();
        size_t within = 0;
        double worst_ratio = 0;
        for (size_t i = 0; i < latency.size(); i++) {
            within += latency[i] <= 2 * periods[i] ? 1 : 0;
            worst_ratio = std::max(worst_ratio, latency[i] / periods[i]);
        }
        std::sort(latency.begin(), latency.end());
        auto q = [&](double f) { return latency.empty() ? 0.0 : latency[std::min(latency.size() - 1, size_t(f * latency.size()))]; };
        vram_scrub_stats st = stats_of(s);
        std::printf("\n## Bit flips written with cudaMemcpy while the workload runs (%u SMs)\n\n"
                    "- flips caught with the right shard and region: **%d / %d**; within 2 pass periods of "
                    "the flip: **%zu**; worst latency / pass period: %.2f\n"
                    "- time from the cudaMemcpy to the callback: median %.3f s, p90 %.3f s, max %.3f s "
                    "(pass period %.3f s: last pass %.3f s)\n"
                    "- false reports: %zu; scrubber errors: %llu; stale digests: %llu\n"
                    "- %.0f s of scrubbing with the workload running (%.0f GB/s of weights)\n",
                    st.budget, caught, flips, within, worst_ratio, q(0.5), q(0.9), latency.empty() ? 0.0 : latency.back(),
                    periods.empty() ? 0.0 : periods.back(), st.last_pass_ns / 1e9, false_reports,
                    (unsigned long long)st.errors, (unsigned long long)st.stale_digests, flips_s, wl_bytes.load() / flips_s / 1e9);
        if (within != size_t(flips)) failures++;
        if (caught != flips || false_reports != 0 || st.errors != 0) failures++;
        clean_total += flips_s;
        vram_scrubber_free(s);
    }

    // 3. Restore: the sealed bytes back at the same address; wrong bytes write nothing.
    {
        std::vector<uint8_t> host(TENSOR_BYTES);
        CK(cudaMemcpy(host.data(), wl.weights[0], TENSOR_BYTES, cudaMemcpyDeviceToHost));
        vram_scrubber *s = start_scrubber(ctx, shards, flip_sms, &sink);
        wait_passes(s, 1);
        size_t before;
        {
            std::lock_guard<std::mutex> g(sink.m);
            before = sink.reports.size();
        }
        uint8_t *p = reinterpret_cast<uint8_t *>(wl.weights[0]) + (5ull << 20) + 99;
        uint8_t byte = uint8_t(host[(5ull << 20) + 99] ^ 0x80);
        CK(cudaMemcpy(p, &byte, 1, cudaMemcpyHostToDevice));
        {
            std::unique_lock<std::mutex> g(sink.m);
            sink.cv.wait_for(g, std::chrono::seconds(20), [&] { return sink.reports.size() > before; });
        }
        std::vector<uint8_t> wrong(host);
        wrong[17] ^= 1;
        vram_status bad = vram_shard_restore(ctx, shards[0], wrong.data(), wrong.size());
        uint8_t still = 0;
        CK(cudaMemcpy(&still, p, 1, cudaMemcpyDeviceToHost));
        auto r0 = std::chrono::steady_clock::now();
        vram_status good = vram_shard_restore(ctx, shards[0], host.data(), host.size());
        double restore_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
        const void *addr = vram_shard_device_ptr(shards[0]);
        uint64_t reports_before = stats_of(s).damage_reports;
        wait_passes(s, 2);
        vram_verify_report rep;
        vram_status v = vram_verify(ctx, shards[0], &rep);
        bool pass = bad == VRAM_ERR_INTEGRITY && still == byte && good == VRAM_OK && addr == wl.weights[0] &&
                    v == VRAM_OK && stats_of(s).damage_reports == reports_before && sink.reports.size() == before + 1;
        std::printf("\n## Restore\n\n- damage reported: %s; restore with wrong bytes: %s, damaged byte left as it was: %s\n"
                    "- restore with the sealed bytes: %s in %.3f s, same address: %s; verify after: %s; "
                    "no report in the next 2 passes: %s\n",
                    sink.reports.size() == before + 1 ? "yes" : "NO", vram_status_str(bad), still == byte ? "yes" : "NO",
                    vram_status_str(good), restore_s, addr == wl.weights[0] ? "yes" : "NO", vram_status_str(v),
                    stats_of(s).damage_reports == reports_before ? "yes" : "NO");
        if (!pass) failures++;
        vram_scrubber_free(s);
    }

    // 4. A long clean run with the workload: no report may come.
    if (clean_seconds > 0) {
        size_t before;
        {
            std::lock_guard<std::mutex> g(sink.m);
            before = sink.reports.size();
        }
        vram_scrubber *s = start_scrubber(ctx, shards, clean_sms, &sink);
        double alone = wl.run_for(seconds);
        auto t0 = std::chrono::steady_clock::now();
        double with = wl.run_for(clean_seconds);
        double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        vram_scrub_stats st = stats_of(s);
        size_t reports;
        {
            std::lock_guard<std::mutex> g(sink.m);
            reports = sink.reports.size() - before;
        }
        std::printf("\n## Clean run (%u SMs)\n\n- %.0f s of scrubbing with the workload running: %llu passes "
                    "(%.3f s each), false reports: **%zu**, errors: %llu, stale digests: %llu\n"
                    "- workload: %.0f GB/s with the scrubber, %.0f GB/s alone just before (%.1f %% kept)\n",
                    st.budget, el, (unsigned long long)st.passes, el / double(std::max<uint64_t>(st.passes, 1)), reports,
                    (unsigned long long)st.errors, (unsigned long long)st.stale_digests, with / 1e9, alone / 1e9,
                    100 * with / alone);
        if (reports != 0 || st.errors != 0) failures++;
        clean_total += el;
        vram_scrubber_free(s);
    }
    std::printf("\nscrubbing time without a false report in this run: %.0f s\n", clean_total);

    for (vram_shard *s : shards) vram_shard_free(s);
    vram_ctx_free(ctx);
    for (uint4 *p : wl.weights) CK(cudaFree(p));
    CK(cudaFree(wl.x));
    CK(cudaFree(wl.y));
    std::printf("\nscrub_serving: %d failure(s)\n", failures);
    return failures == 0 ? 0 : 1;
}
