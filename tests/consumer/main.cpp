// The C++ consumer: vram.hpp from the installed package, through the same vram::vram target.
#include <vram.hpp>

#include <cstdio>
#include <string>

int main() {
    const std::string key = "an example seal secret, 32 bytes";
    auto ctx = vram::context::open(vram::as_bytes(key));
    auto shard = ctx.seal("consumer.weight", vram::as_bytes(key));
    const bool intact = ctx.verify(shard).intact;
    std::printf("C++ consumer of libvram %s: %s\n", vram::version(), intact ? "OK" : "FAILED");
    return intact ? 0 : 1;
}
