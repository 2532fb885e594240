/* Links against an installed libvram (find_package or pkg-config), seals and verifies. */
#include <stdio.h>
#include <string.h>
#include <vram.h>

int main(void) {
    static const uint8_t key[32] = "consumer test secret, 32 bytes!";
    static uint8_t weights[10000];
    for (size_t i = 0; i < sizeof weights; i++) weights[i] = (uint8_t)(i * 7u);

    vram_ctx_options opts;
    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    opts.backend = VRAM_BACKEND_AUTO;
    opts.key = key;
    opts.key_len = sizeof key;

    vram_ctx *ctx = NULL;
    vram_shard *shard = NULL;
    if (vram_ctx_new(&opts, &ctx) != VRAM_OK) return 1;
    if (vram_seal(ctx, "consumer.weight", weights, sizeof weights, &shard) != VRAM_OK) return 1;
    vram_status s = vram_verify(ctx, shard, NULL);
    printf("installed libvram %s: verify -> %s\n", vram_version(), vram_status_str(s));
    vram_shard_free(shard);
    vram_ctx_free(ctx);
    return s == VRAM_OK ? 0 : 1;
}
