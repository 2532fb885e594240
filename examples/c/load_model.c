/* load_model: what an inference server does at start-up, in three calls.
 *
 *   1. open a context with the server's secret;
 *   2. vram_load_safetensors() with the publisher's manifest as the expectation: every tensor
 *      is read, copied where it will live (GPU memory when there is one), sealed, and checked
 *      against the manifest on the way in (a wrong tensor stops the load, naming it);
 *   3. vram_model_verify() whenever the server wants to know the weights are still the model.
 *
 * To be self-contained the program first plays the publisher: it writes a small safetensors
 * file and makes its manifest. Then it plays the server, and finally shows a tampered file
 * being refused with nothing kept. Exits 0 only if every step behaves as documented. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vram.h"

#define CHECK(call, want)                                                                  \
    do {                                                                                   \
        vram_status s_ = (call);                                                           \
        if (s_ != (want)) {                                                                \
            char msg_[VRAM_MAX_ERROR_MESSAGE + 1];                                         \
            vram_last_error_message(msg_, sizeof msg_);                                    \
            fprintf(stderr, "%s:%d: %s -> %s (%s)\n", __FILE__, __LINE__, #call,           \
                    vram_status_str(s_), msg_);                                            \
            goto fail;                                                                     \
        }                                                                                  \
    } while (0)

#define WEIGHT_BYTES (2u * 1024u * 1024u + 64u)

/* A safetensors file: an 8-byte little-endian header length, the JSON header, the data. */
static int write_model(const char *path, int tamper) {
    char header[512];
    const int n = snprintf(header, sizeof header,
                           "{\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"F16\",\"shape\":[%u],"
                           "\"data_offsets\":[0,%u]},\"model.norm.weight\":{\"dtype\":\"F32\","
                           "\"shape\":[4],\"data_offsets\":[%u,%u]}}",
                           WEIGHT_BYTES / 2u, WEIGHT_BYTES, WEIGHT_BYTES, WEIGHT_BYTES + 16u);
    FILE *f = fopen(path, "wb");
    if (f == NULL || n <= 0) return -1;
    unsigned char len[8] = {0};
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(((unsigned long long)n >> (8 * i)) & 0xffu);
    fwrite(len, 1, 8, f);
    fwrite(header, 1, (size_t)n, f);
    unsigned x = 2463534242u;
    for (unsigned i = 0; i < WEIGHT_BYTES + 16u; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        unsigned char b = (unsigned char)x;
        if (tamper && i == 1500000u) b ^= 0x04u; /* one flipped bit in region 1 */
        fputc(b, f);
    }
    return fclose(f);
}

int main(void) {
    static const uint8_t secret[32] = "load_model example secret 32B!!";
    char path[256];
    uint8_t *published = NULL;
    size_t published_len = 0;
    vram_ctx *publisher = NULL, *server = NULL;
    vram_model *model = NULL, *refused = NULL;
    vram_manifest *manifest = NULL, *expected = NULL;
    int rc = 1;
    snprintf(path, sizeof path, "/tmp/vram-load-model-%ld.safetensors", (long)clock());

    vram_ctx_options opts;
    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    opts.backend = VRAM_BACKEND_AUTO;
    opts.key = secret;
    opts.key_len = sizeof secret;

    /* The publisher: load the file once and export its manifest, with the 1 MiB region roots
     * (32 bytes per MiB) that let a damaged copy be located. */
    if (write_model(path, 0) != 0) return 1;
    CHECK(vram_ctx_new(&opts, &publisher), VRAM_OK);
    vram_load_options publish;
    memset(&publish, 0, sizeof publish);
    publish.struct_size = sizeof publish;
    publish.flags = VRAM_MANIFEST_REGION_ROOTS;
    CHECK(vram_load_safetensors(publisher, path, &publish, &model), VRAM_OK);
    CHECK(vram_model_manifest(publisher, model, &manifest), VRAM_OK);
    CHECK(vram_manifest_export(manifest, NULL, 0, &published_len), VRAM_ERR_BUFFER_TOO_SMALL);
    published = malloc(published_len);
    if (published == NULL) goto fail;
    CHECK(vram_manifest_export(manifest, published, published_len, &published_len), VRAM_OK);
    vram_model_free(model);
    model = NULL;

    /* The server: its own context, the publisher's manifest, one load, one verify. */
    CHECK(vram_ctx_new(&opts, &server), VRAM_OK);
    CHECK(vram_manifest_import(server, published, published_len, &expected), VRAM_OK);
    vram_load_options load;
    memset(&load, 0, sizeof load);
    load.struct_size = sizeof load;
    load.expected = expected;
    CHECK(vram_load_safetensors(server, path, &load, &model), VRAM_OK);
    vram_manifest_summary summary;
    memset(&summary, 0, sizeof summary);
    summary.struct_size = sizeof summary;
    CHECK(vram_model_verify(server, model, NULL, &summary), VRAM_OK);
    vram_model_tensor_info t;
    memset(&t, 0, sizeof t);
    t.struct_size = sizeof t;
    CHECK(vram_model_tensor(model, 0, &t), VRAM_OK);
    printf("loaded %zu tensors of model '%s' on the %s backend; all %zu intact\n",
           vram_model_tensor_count(model), vram_manifest_model(expected),
           vram_ctx_backend(server) == VRAM_BACKEND_CUDA ? "CUDA" : "host", summary.intact);
    printf("  %s: %s, %llu bytes at %p\n", t.name, t.dtype, (unsigned long long)t.byte_len, t.data);

    /* A reload from a tampered file (the server frees the model first: a tensor name is
     * sealed once per context): refused, the tensor and its region named, nothing kept. */
    vram_model_free(model);
    model = NULL;
    if (write_model(path, 1) != 0) goto fail;
    uint64_t used = 0;
    CHECK(vram_ctx_usage(server, &used, NULL), VRAM_OK);
    CHECK(vram_load_safetensors(server, path, &load, &refused), VRAM_ERR_INTEGRITY);
    char msg[VRAM_MAX_ERROR_MESSAGE + 1];
    vram_last_error_message(msg, sizeof msg);
    printf("tampered file refused: %s\n", msg);
    uint64_t after = 0;
    CHECK(vram_ctx_usage(server, &after, NULL), VRAM_OK);
    if (refused != NULL || after != used || strstr(msg, "region at byte offset 1048576") == NULL) {
        fprintf(stderr, "the refused load kept something or did not name the region\n");
        goto fail;
    }
    rc = 0;
fail:
    remove(path);
    vram_model_free(model);
    vram_manifest_free(manifest);
    vram_manifest_free(expected);
    free(published);
    vram_ctx_free(server);
    vram_ctx_free(publisher);
    return rc;
}
