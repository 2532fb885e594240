// Seal weights, verify them, export and re-open their seal record, and catch a flipped bit:
// libvram from C++ through vram.hpp alone.
#include <vram.hpp>

#include <cstdio>
#include <string>
#include <vector>

int main() {
    try {
        const std::string key = "an example seal secret, 32 bytes"; // at least 32 bytes
        vram::context_options opts;
        opts.flags = VRAM_CTX_ALLOW_FAULT_DRILLS; // only for the drill below
        auto ctx = vram::context::open(vram::as_bytes(key), opts);

        std::vector<float> weights(1 << 20, 0.5f); // 4 MiB, wherever the GPU or host keeps it
        auto shard = ctx.seal("layer0.weight", vram::as_bytes(weights));
        auto record = shard.record(); // store it: a later process re-opens it under the key
        auto info = ctx.record_open(record);
        std::printf("sealed '%s': %zu bytes, record of %zu bytes\n", info.shard_id, shard.size(),
                    record.size());
        if (!ctx.verify(shard).intact) return 1;

        shard.try_debug_flip_bit(8ull * 3'000'000 + 5); // the fault drill: one bit
        auto check = ctx.verify(shard);
        std::printf("after one flipped bit: %s, first damaged region at byte %llu\n",
                    check.intact ? "intact" : "DAMAGED",
                    static_cast<unsigned long long>(check.report.first_damaged_offset));
        return check.intact ? 1 : 0;
    } catch (const vram::error &e) {
        std::fprintf(stderr, "libvram: %s\n", e.what());
        return 1;
    }
}
