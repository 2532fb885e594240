// vram.hpp built with -fno-exceptions: only the try_ forms exist, and they report every error
// as a result (status, std::error_code and message) without throwing.
#include <vram.hpp>

#include <cstdio>
#include <string>
#include <vector>

#if VRAM_HPP_EXCEPTIONS
#error "this test must be built with -fno-exceptions"
#endif

int main() {
    int failures = 0;
    auto check = [&](bool ok, const char *what) {
        if (!ok) {
            std::fprintf(stderr, "CHECK failed: %s\n", what);
            ++failures;
        }
    };
    const std::string key = "an example seal secret, 32 bytes";
    auto bad = vram::context::try_open(vram::as_bytes(std::string("short")));
    check(!bad && bad.status() == VRAM_ERR_INVALID_ARGUMENT, "a short key is refused");
    check(bad.error() == vram::make_error_code(VRAM_ERR_INVALID_ARGUMENT), "error_code");

    auto opened = vram::context::try_open(vram::as_bytes(key));
    check(opened.ok(), "open");
    if (!opened) return 1;
    vram::context ctx = std::move(opened).value();
    std::vector<double> data(100000, 1.25);
    auto sealed = ctx.try_seal("w", vram::as_bytes(data));
    check(sealed.ok(), "seal");
    if (!sealed) return 1;
    vram::shard s = std::move(sealed).value();
    auto v = ctx.try_verify(s);
    check(v.ok() && v.value().intact, "verify");
    auto rec = s.try_record();
    check(rec.ok() && !rec.value().empty(), "record");
    auto info = ctx.try_record_open(rec.value());
    check(info.ok() && info.value().byte_len == data.size() * sizeof(double), "record_open");
    auto dup = ctx.try_seal("w", vram::as_bytes(data));
    check(!dup && dup.status() == VRAM_ERR_INVALID_ARGUMENT && !dup.message().empty(),
          "a live id is refused with a message");
    auto drill = s.try_debug_flip_bit(0);
    check(!drill && drill.status() == VRAM_ERR_POLICY, "drills are off without the flag");
    std::printf("vram.hpp without exceptions: %s\n", failures == 0 ? "all checks passed" : "FAILED");
    return failures == 0 ? 0 : 1;
}
