/* scrub: the background scrubber through the C API, as a server uses it. A host-backend
 * scrubber sweeps shared shards while 16 threads pause and resume it, add and remove shards of
 * their own, and read its stats; a flipped bit must reach the damage callback naming the right
 * shard and region, a restore must make the next passes clean, and freeing must stop it with
 * nothing leaked (ctest runs this plainly, under valgrind memcheck and under ASan). The same
 * calls drive the CUDA backend in the GPU staging (tests/gpu.rs and bench/scrub_serving.cu). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vram.h"
#include "expect.h"

#define THREADS 16
#define ROUNDS 6
#define SHARED 4
#define SHARD_BYTES ((size_t)(2u << 20) + 4099u) /* three regions, the last partial */

static vram_ctx *g_ctx;
static vram_scrubber *g_scrubber;
static pthread_cond_t g_reported = PTHREAD_COND_INITIALIZER;
static int g_reports;
static char g_report_id[128];
static uint64_t g_report_offsets[8];
static size_t g_report_n;

static void on_damage(void *userdata, const vram_shard *shard, const char *shard_id,
                      const uint64_t *offsets, size_t n) {
    uint8_t root[32];
    (void)userdata;
    /* The handle is usable during the call. */
    EXPECT(vram_shard_root(shard, root), VRAM_OK);
    pthread_mutex_lock(&g_lock);
    g_reports++;
    snprintf(g_report_id, sizeof g_report_id, "%s", shard_id);
    g_report_n = n < 8 ? n : 8;
    memcpy(g_report_offsets, offsets, g_report_n * sizeof *offsets);
    pthread_cond_broadcast(&g_reported);
    pthread_mutex_unlock(&g_lock);
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((i * 2654435761u) >> 13) ^ (unsigned char)seed;
}

static void *worker(void *arg) {
    const int id = (int)(size_t)arg;
    unsigned char *data = malloc(70000);
    if (data == NULL) return NULL;
    for (int round = 0; round < ROUNDS; round++) {
        char name[64];
        vram_shard *mine = NULL;
        vram_scrub_stats st;
        fill(data, 70000, (unsigned)(id * 31 + round));
        snprintf(name, sizeof name, "scrub.worker.%d.%d", id, round);
        EXPECT(vram_seal(g_ctx, name, data, 70000 - (size_t)round, &mine), VRAM_OK);
        EXPECT(vram_scrubber_add(g_scrubber, mine), VRAM_OK);
        EXPECT(vram_scrubber_add(g_scrubber, mine), VRAM_ERR_INVALID_ARGUMENT);
        if (id % 4 == 0) {
            EXPECT(vram_scrubber_pause(g_scrubber), VRAM_OK);
            EXPECT(vram_scrubber_resume(g_scrubber), VRAM_OK);
        }
        memset(&st, 0, sizeof st);
        st.struct_size = sizeof st;
        EXPECT(vram_scrubber_stats(g_scrubber, &st), VRAM_OK);
        st.struct_size = 3;
        EXPECT(vram_scrubber_stats(g_scrubber, &st), VRAM_ERR_INVALID_ARGUMENT);
        /* Freeing the handle first is allowed: the scrubber holds the shard until removed. */
        if (round % 2 == 0) {
            EXPECT(vram_scrubber_remove(g_scrubber, mine), VRAM_OK);
            EXPECT(vram_scrubber_remove(g_scrubber, mine), VRAM_ERR_INVALID_ARGUMENT);
            vram_shard_free(mine);
        } else {
            vram_shard_free(mine);
        }
    }
    free(data);
    return NULL;
}

static vram_scrub_stats stats_now(void) {
    vram_scrub_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    EXPECT(vram_scrubber_stats(g_scrubber, &st), VRAM_OK);
    return st;
}

/* Waits until `passes` more full passes have completed (at most ~60 s). */
static void wait_passes(uint64_t passes) {
    uint64_t target = stats_now().passes + passes;
    for (int i = 0; i < 6000 && stats_now().passes < target; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (stats_now().passes < target) fail("wait_passes (timed out)", VRAM_OK);
}

int main(void) {
    static const uint8_t secret[32] = "scrubber test secret, 32 bytes!";
    vram_shard *shared[SHARED];
    const vram_shard *list[SHARED];
    unsigned char *bytes = malloc(SHARD_BYTES);
    pthread_t threads[THREADS];
    uint64_t before = 0, after = 0;
    if (bytes == NULL) return 1;

    vram_ctx_options opts;
    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    opts.backend = VRAM_BACKEND_HOST;
    opts.key = secret;
    opts.key_len = sizeof secret;
    opts.flags = VRAM_CTX_ALLOW_FAULT_DRILLS;
    if (vram_ctx_new(&opts, &g_ctx) != VRAM_OK) return 1;
    EXPECT(vram_ctx_usage(g_ctx, &before, NULL), VRAM_OK);
    for (int i = 0; i < SHARED; i++) {
        char name[32];
        fill(bytes, SHARD_BYTES, (unsigned)i);
        snprintf(name, sizeof name, "shared.%d", i);
        EXPECT(vram_seal(g_ctx, name, bytes, SHARD_BYTES, &shared[i]), VRAM_OK);
        list[i] = shared[i];
    }

    /* Bad arguments change nothing. */
    vram_scrubber_options so;
    memset(&so, 0, sizeof so);
    so.struct_size = sizeof so;
    so.max_threads = 2;
    so.on_damage = on_damage;
    vram_scrubber *none = NULL;
    EXPECT(vram_scrubber_new(NULL, list, SHARED, &so, &none), VRAM_ERR_NULL_ARGUMENT);
    EXPECT(vram_scrubber_new(g_ctx, NULL, SHARED, &so, &none), VRAM_ERR_NULL_ARGUMENT);
    EXPECT(vram_scrubber_new(g_ctx, list, SHARED, &so, NULL), VRAM_ERR_NULL_ARGUMENT);
    so.flags = 0x80;
    EXPECT(vram_scrubber_new(g_ctx, list, SHARED, &so, &none), VRAM_ERR_INVALID_ARGUMENT);
    so.flags = 0;
    so.struct_size = 5;
    EXPECT(vram_scrubber_new(g_ctx, list, SHARED, &so, &none), VRAM_ERR_INVALID_ARGUMENT);
    so.struct_size = sizeof so;
    const vram_shard *twice[2] = {shared[0], shared[0]};
    EXPECT(vram_scrubber_new(g_ctx, twice, 2, &so, &none), VRAM_ERR_INVALID_ARGUMENT);
    /* A damaged shard is refused: restore it first. */
    EXPECT(vram_debug_flip_bit(shared[1], 12345), VRAM_OK);
    EXPECT(vram_scrubber_new(g_ctx, list, SHARED, &so, &none), VRAM_ERR_INTEGRITY);
    EXPECT(vram_debug_flip_bit(shared[1], 12345), VRAM_OK);
    if (none != NULL) fail("out written on error", VRAM_OK);
    none = NULL;
    EXPECT(vram_scrubber_pause(NULL), VRAM_ERR_NULL_ARGUMENT);
    EXPECT(vram_scrubber_stats(NULL, NULL), VRAM_ERR_NULL_ARGUMENT);
    vram_scrubber_free(NULL);

    /* Extreme pacing is accepted and stops promptly: a period and a rate that no pass can
     * meet. */
    so.pass_period_ns = UINT64_MAX;
    so.max_bytes_per_second = 1;
    EXPECT(vram_scrubber_new(g_ctx, list, SHARED, &so, &none), VRAM_OK);
    EXPECT(vram_scrubber_pause(none), VRAM_OK);
    vram_scrubber_free(none);
    so.max_bytes_per_second = 0;

    so.pass_period_ns = 2 * 1000 * 1000; /* 2 ms */
    EXPECT(vram_scrubber_new(g_ctx, list, SHARED, &so, &g_scrubber), VRAM_OK);
    if (g_scrubber == NULL) return 1;
    if (stats_now().budget != 2 || stats_now().shards != SHARED) fail("budget or shard count", VRAM_OK);

    for (int i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, worker, (void *)(size_t)i);
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    wait_passes(2);
    vram_scrub_stats st = stats_now();
    if (st.damage_reports != 0 || st.errors != 0 || st.stale_digests != 0) fail("false report while clean", VRAM_OK);
    if (st.shards != SHARED + THREADS * ROUNDS / 2) fail("shards after add/remove", VRAM_OK);

    /* A flipped bit in region 2 of shared.3 reaches the callback with that region only. */
    const uint64_t bit = ((2ull << 20) + 1000) * 8 + 5;
    EXPECT(vram_debug_flip_bit(shared[3], bit), VRAM_OK);
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < 600 && g_reports == 0; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&g_reported, &g_lock, &ts);
    }
    int reports = g_reports;
    pthread_mutex_unlock(&g_lock);
    if (reports != 1 || strcmp(g_report_id, "shared.3") != 0 || g_report_n != 1 ||
        g_report_offsets[0] != (2ull << 20)) {
        fprintf(stderr, "reports %d, id '%s', n %zu, offset %llu\n", reports, g_report_id, g_report_n,
                (unsigned long long)g_report_offsets[0]);
        fail("damage callback", VRAM_OK);
    }
    /* Damage stays reported once while it lasts. */
    wait_passes(2);
    if (g_reports != 1) fail("damage reported more than once", VRAM_OK);

    /* Restore from the original bytes; the next passes are clean and the shard re-armed. */
    fill(bytes, SHARD_BYTES, 3u);
    EXPECT(vram_shard_restore(g_ctx, shared[3], bytes, SHARD_BYTES), VRAM_OK);
    wait_passes(2);
    st = stats_now();
    if (st.damage_reports != 1 || st.damaged_regions != 1 || st.errors != 0) fail("stats after restore", VRAM_OK);
    EXPECT(vram_debug_flip_bit(shared[0], 7), VRAM_OK);
    wait_passes(2);
    if (g_reports != 2 || strcmp(g_report_id, "shared.0") != 0 || g_report_offsets[0] != 0) fail("second damage", VRAM_OK);
    EXPECT(vram_debug_flip_bit(shared[0], 7), VRAM_OK);

    /* Paused: no step starts, so once the pass whose last step had finished is counted, no
     * pass completes. */
    EXPECT(vram_scrubber_pause(g_scrubber), VRAM_OK);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    uint64_t p0 = stats_now().passes;
    nanosleep(&ts, NULL);
    if (stats_now().passes != p0 || !stats_now().paused) fail("passes while paused", VRAM_OK);
    EXPECT(vram_scrubber_resume(g_scrubber), VRAM_OK);
    wait_passes(1);

    vram_scrubber_free(g_scrubber);
    for (int i = 0; i < SHARED; i++) vram_shard_free(shared[i]);
    EXPECT(vram_ctx_usage(g_ctx, &after, NULL), VRAM_OK);
    if (after != before) fail("context usage not back to start", VRAM_OK);
    vram_ctx_free(g_ctx);
    free(bytes);
    if (g_failures != 0) {
        fprintf(stderr, "%d failure(s)\n", g_failures);
        return 1;
    }
    printf("scrub: ok (%d damage reports)\n", g_reports);
    return 0;
}
