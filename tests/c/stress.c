/* stress: 16 threads use one context at once, as a server's workers would: each seals and
 * frees its own shards, verifies shared ones in batches, propagates bounds through a shared
 * model, sends bad arguments, and now and then replaces the log callback, whose function
 * itself calls back into libvram. Run by ctest plainly, under valgrind memcheck and, where the
 * compiler has it, under AddressSanitizer. Exits 0 when every call returned what it should and
 * the context's usage is back where it started. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "vram.h"
#include "expect.h"

#define THREADS 16
#define ROUNDS 12

static vram_ctx *g_ctx;
static ibp_model *g_model;
static const vram_shard *g_shared[4];
/* A log callback that calls back into libvram: events of the nested call are not delivered
 * to it again, and nothing deadlocks. */
static void on_event(void *userdata, uint32_t level, const char *target, const char *message) {
    (void)level;
    (void)target;
    (void)message;
    if (userdata != NULL) {
        EXPECT(vram_verify(g_ctx, g_shared[0], NULL), VRAM_OK);
    }
}

static void *worker(void *arg) {
    const int id = (int)(size_t)arg;
    unsigned char data[9000];
    float lo[2], hi[2], olo[3], ohi[3];
    vram_verify_report reports[4];
    for (int round = 0; round < ROUNDS; round++) {
        char name[64];
        vram_shard *mine = NULL;
        for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 31u + (unsigned)id + (unsigned)round);
        snprintf(name, sizeof name, "worker.%d.round.%d", id, round);
        EXPECT(vram_seal(g_ctx, name, data, sizeof data - (size_t)round, &mine), VRAM_OK);
        EXPECT(vram_verify(g_ctx, mine, NULL), VRAM_OK);
        /* The same id again while it is live: refused, nothing kept. */
        vram_shard *dup = NULL;
        EXPECT(vram_seal(g_ctx, name, data, 10, &dup), VRAM_ERR_INVALID_ARGUMENT);
        if (dup != NULL) fail("output written on failure", VRAM_OK);
        EXPECT(vram_verify_many(g_ctx, g_shared, 4, reports), VRAM_OK);
        lo[0] = -1.0f + 0.01f * (float)round;
        lo[1] = -0.5f;
        hi[0] = lo[0] + 0.5f;
        hi[1] = 0.5f;
        EXPECT(ibp_propagate(g_model, 1, lo, hi, olo, ohi), VRAM_OK);
        for (int k = 0; k < 3; k++)
            if (!(olo[k] <= ohi[k])) fail("bounds out of order", VRAM_OK);
        /* Bad input: NaN box and NULL pointers are refused, nothing written. */
        lo[0] = NAN;
        EXPECT(ibp_propagate(g_model, 1, lo, hi, olo, ohi), VRAM_ERR_INVALID_ARGUMENT);
        EXPECT(vram_verify(g_ctx, NULL, NULL), VRAM_ERR_NULL_ARGUMENT);
        if (round % 4 == id % 4) {
            vram_set_log_callback(on_event, (round % 2) ? (void *)g_ctx : NULL, 5);
        }
        if (round % 5 == 0) vram_set_log_callback(NULL, NULL, 0);
        vram_shard_free(mine);
    }
    return NULL;
}

int main(void) {
    static const uint8_t secret[32] = "stress test secret of 32 bytes!";
    static const float w1[16] = {1, 0.5f, -1, 0.5f, 0.5f, 1, 0.5f, -1, -0.5f, -1, 1, 1, -1, 0.25f, 0.25f, -1};
    static const float w2[24] = {1, -1, 0.5f, 0, 0.5f, -0.5f, 1, 0, -0.5f, 1, 0, 1,
                                 -0.5f, 0.5f, 0, 1, 0, 0, -1, -0.5f, 1, 1, -1, 0.5f};
    const uint64_t shape[1] = {2};
    vram_shard *shared[4] = {NULL, NULL, NULL, NULL};
    ibp_builder *b = NULL;
    pthread_t threads[THREADS];
    uint64_t before = 0, after = 0;
    unsigned char bytes[5000];

    vram_ctx_options opts;
    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    opts.backend = VRAM_BACKEND_AUTO;
    opts.key = secret;
    opts.key_len = sizeof secret;
    if (vram_ctx_new(&opts, &g_ctx) != VRAM_OK) return 1;
    EXPECT(vram_ctx_usage(g_ctx, &before, NULL), VRAM_OK);
    for (int i = 0; i < 4; i++) {
        char name[32];
        memset(bytes, i + 1, sizeof bytes);
        snprintf(name, sizeof name, "shared.%d", i);
        EXPECT(vram_seal(g_ctx, name, bytes, sizeof bytes, &shared[i]), VRAM_OK);
        g_shared[i] = shared[i];
    }
    EXPECT(ibp_builder_new(g_ctx, "stress_net", shape, 1, &b), VRAM_OK);
    EXPECT(ibp_builder_add_linear(b, IBP_PREV, 8, w1, NULL, NULL), VRAM_OK);
    EXPECT(ibp_builder_add_relu(b, IBP_PREV, NULL), VRAM_OK);
    EXPECT(ibp_builder_add_linear(b, IBP_PREV, 3, w2, NULL, NULL), VRAM_OK);
    EXPECT(ibp_builder_build(b, &g_model), VRAM_OK);
    if (g_failures > 0) return 1;

    for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, worker, (void *)(size_t)t);
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    vram_set_log_callback(NULL, NULL, 0);

    ibp_model_free(g_model);
    for (int i = 0; i < 4; i++) vram_shard_free(shared[i]);
    EXPECT(vram_ctx_usage(g_ctx, &after, NULL), VRAM_OK);
    if (after != before) {
        fprintf(stderr, "FAILED: usage %llu after, %llu before\n", (unsigned long long)after,
                (unsigned long long)before);
        g_failures++;
    }
    vram_ctx_free(g_ctx);
    printf("stress: %d threads x %d rounds, %d failure(s)\n", THREADS, ROUNDS, g_failures);
    return g_failures == 0 ? 0 : 1;
}
