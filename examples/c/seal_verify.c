/* seal_verify: the whole life of one sealed shard.
 *
 * Seals a buffer, verifies it, exports its seal record and checks it again, flips one bit with
 * the fault drill, shows where verification locates the damage, and frees everything.
 * Exits 0 only if every step behaves as documented. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vram.h"

#define CHECK(call, want)                                                                  \
    do {                                                                                   \
        vram_status s_ = (call);                                                           \
        if (s_ != (want)) {                                                                \
            char msg_[512];                                                                \
            vram_last_error_message(msg_, sizeof msg_);                                    \
            fprintf(stderr, "%s:%d: %s -> %s (%s)\n", __FILE__, __LINE__, #call,           \
                    vram_status_str(s_), msg_);                                            \
            goto fail;                                                                     \
        }                                                                                  \
    } while (0)

int main(void) {
    static const uint8_t secret[32] = "replace with 32+ secret bytes!!";
    const size_t len = 3u * 1024u * 1024u + 123u; /* 3 MiB + 123 B: four 1 MiB regions */
    uint8_t *weights = malloc(len);
    uint8_t *record = NULL;
    vram_ctx *ctx = NULL;
    vram_shard *shard = NULL;
    int rc = 1;
    if (weights == NULL) return 1;
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        weights[i] = (uint8_t)x;
    }

    vram_ctx_options opts;
    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    opts.backend = VRAM_BACKEND_AUTO;
    opts.key = secret;
    opts.key_len = sizeof secret;
    opts.flags = VRAM_CTX_ALLOW_FAULT_DRILLS; /* this program runs the fault drill */
    CHECK(vram_ctx_new(&opts, &ctx), VRAM_OK);
    printf("backend: %s\n", vram_ctx_backend(ctx) == VRAM_BACKEND_CUDA ? "CUDA (GPU memory)" : "host memory");

    CHECK(vram_seal(ctx, "model.layers.0.mlp.up_proj.weight", weights, len, &shard), VRAM_OK);
    uint8_t root[32];
    CHECK(vram_shard_root(shard, root), VRAM_OK);
    printf("sealed %zu bytes, Merkle root ", vram_shard_len(shard));
    for (int i = 0; i < 32; i++) printf("%02x", root[i]);
    printf("\n");

    vram_verify_report report;
    CHECK(vram_verify(ctx, shard, &report), VRAM_OK);
    printf("verify: intact (%llu leaves of %u B, %llu regions of %llu B)\n",
           (unsigned long long)report.total_leaves, report.leaf_size,
           (unsigned long long)report.total_regions, (unsigned long long)report.region_size);

    size_t record_len = 0;
    CHECK(vram_shard_record(shard, NULL, 0, &record_len), VRAM_ERR_BUFFER_TOO_SMALL);
    record = malloc(record_len);
    if (record == NULL) goto fail;
    CHECK(vram_shard_record(shard, record, record_len, &record_len), VRAM_OK);
    CHECK(vram_record_verify(ctx, record, record_len, shard), VRAM_OK);
    printf("record: %zu bytes, authentic\n", record_len);
    record[20] ^= 1;
    CHECK(vram_record_verify(ctx, record, record_len, shard), VRAM_ERR_BAD_SEAL);
    printf("record with one altered byte: rejected (VRAM_ERR_BAD_SEAL)\n");

    const uint64_t bit = 8u * (2u * 1024u * 1024u + 4096u) + 3u; /* inside region 2 */
    CHECK(vram_debug_flip_bit(shard, bit), VRAM_OK);
    CHECK(vram_verify(ctx, shard, &report), VRAM_ERR_INTEGRITY);
    printf("after flipping bit %llu: VRAM_ERR_INTEGRITY, %llu damaged region(s), first at byte %llu\n",
           (unsigned long long)bit, (unsigned long long)report.damaged_regions,
           (unsigned long long)report.first_damaged_offset);
    if (report.damaged_regions != 1 || report.first_damaged_offset != 2u * 1024u * 1024u) goto fail;
    CHECK(vram_debug_flip_bit(shard, bit), VRAM_OK);
    CHECK(vram_verify(ctx, shard, NULL), VRAM_OK);
    printf("bit flipped back: intact again\n");
    rc = 0;
fail:
    vram_shard_free(shard);
    vram_ctx_free(ctx);
    free(record);
    free(weights);
    printf("%s\n", rc == 0 ? "seal_verify: OK" : "seal_verify: FAILED");
    return rc;
}
