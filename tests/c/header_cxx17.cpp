// vram.h compiles as C++17 with warnings as errors, inside extern "C" guards of its own.
#include "vram.h"

#include <cstdio>
#include <cstring>

extern "C" int cxx_side(void) {
    vram_ctx_options opts{};
    opts.struct_size = sizeof(vram_ctx_options);
    opts.backend = VRAM_BACKEND_HOST;
    opts.key_len = 32;
    vram_ctx *ctx = nullptr;
    // A NULL key must be refused with a status, not a crash.
    vram_status s = vram_ctx_new(&opts, &ctx);
    if (s != VRAM_ERR_NULL_ARGUMENT || ctx != nullptr) {
        std::fprintf(stderr, "C++: NULL key gave %s\n", vram_status_str(s));
        return 1;
    }
    return std::strlen(vram_status_str(VRAM_OK)) > 0 ? 0 : 1;
}
