/* Checks shared by the multi-threaded C tests (stress.c, scrub.c): a failed expectation is
 * printed with libvram's last error message and counted in g_failures, from any thread. */
#ifndef VRAM_TEST_EXPECT_H
#define VRAM_TEST_EXPECT_H

#include <pthread.h>
#include <stdio.h>

#include "vram.h"

static int g_failures;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *what, vram_status s) {
    char m[VRAM_MAX_ERROR_MESSAGE + 1];
    vram_last_error_message(m, sizeof m);
    pthread_mutex_lock(&g_lock);
    fprintf(stderr, "FAILED: %s -> %s: %s\n", what, vram_status_str(s), m);
    g_failures++;
    pthread_mutex_unlock(&g_lock);
}

#define EXPECT(call, want)                  \
    do {                                    \
        vram_status s_ = (call);            \
        if (s_ != (want)) fail(#call, s_);  \
    } while (0)

#endif
