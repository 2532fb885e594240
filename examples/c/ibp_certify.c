/* ibp_certify: certified robustness of a small classifier, with bounds that are guaranteed.
 *
 * Builds a 2-input, 3-class ReLU network with the builder (its weights become sealed shards),
 * then for a few inputs and several perturbation sizes eps asks: for EVERY input within eps of
 * this one (an L-infinity box), is the predicted class still the winner? libvram answers with
 * interval bounds that enclose the exact ones despite float32 rounding, so "CERTIFIED" is a
 * proof, not an estimate. The check uses a specification C*y (rows: y_pred - y_other), whose
 * lower bound must be > 0, which is tighter than comparing output boxes.
 * Exits 0 when every step behaves as documented. */
#include <stdio.h>
#include <string.h>

#include "vram.h"

#define CHECK(call)                                                                        \
    do {                                                                                   \
        vram_status s_ = (call);                                                           \
        if (s_ != VRAM_OK) {                                                               \
            char m_[512];                                                                  \
            vram_last_error_message(m_, sizeof m_);                                        \
            fprintf(stderr, "%s -> %s: %s\n", #call, vram_status_str(s_), m_);             \
            goto fail;                                                                     \
        }                                                                                  \
    } while (0)

int main(void) {
    static const uint8_t secret[32] = "ibp_certify example secret 32B!";
    /* Layer 1: 2 -> 8, layer 2: 8 -> 3 (row-major [out x in]). */
    static const float w1[16] = {1.0f, 0.5f, -1.0f, 0.5f, 0.5f, 1.0f, 0.5f, -1.0f,
                                 -0.5f, -1.0f, 1.0f, 1.0f, -1.0f, 0.25f, 0.25f, -1.0f};
    static const float b1[8] = {0.0f, 0.1f, -0.1f, 0.0f, 0.2f, 0.0f, -0.2f, 0.1f};
    static const float w2[24] = {1.0f, -1.0f, 0.5f, 0.0f, 0.5f, -0.5f, 1.0f, 0.0f,
                                 -0.5f, 1.0f, 0.0f, 1.0f, -0.5f, 0.5f, 0.0f, 1.0f,
                                 0.0f, 0.0f, -1.0f, -0.5f, 1.0f, 1.0f, -1.0f, 0.5f};
    static const float b2[3] = {0.0f, 0.0f, 0.1f};
    static const float inputs[3][2] = {{1.0f, 0.2f}, {-0.5f, 1.0f}, {0.05f, -0.05f}};
    static const float eps[4] = {0.001f, 0.01f, 0.1f, 0.5f};
    const uint64_t shape[1] = {2};
    vram_ctx *ctx = NULL;
    ibp_builder *b = NULL;
    ibp_model *model = NULL;
    int rc = 1, certified_small = 1;

    vram_ctx_options opts;
    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    opts.backend = VRAM_BACKEND_AUTO;
    opts.key = secret;
    opts.key_len = sizeof secret;
    CHECK(vram_ctx_new(&opts, &ctx));
    CHECK(ibp_builder_new(ctx, "certify_demo", shape, 1, &b));
    CHECK(ibp_builder_add_linear(b, IBP_PREV, 8, w1, b1, NULL));
    CHECK(ibp_builder_add_relu(b, IBP_PREV, NULL));
    CHECK(ibp_builder_add_linear(b, IBP_PREV, 3, w2, b2, NULL));
    {
        ibp_builder *consumed = b;
        b = NULL; /* consumed by build, success or not */
        CHECK(ibp_builder_build(consumed, &model));
    }
    printf("network: 2 inputs -> 8 ReLU -> 3 classes, weights sealed on the %s backend\n",
           vram_ctx_backend(ctx) == VRAM_BACKEND_CUDA ? "CUDA" : "host");
    CHECK(ibp_model_verify(ctx, model, NULL));

    for (int i = 0; i < 3; i++) {
        /* The predicted class: a degenerate box gives the (bounded) point output. */
        float lo[3], hi[3];
        CHECK(ibp_propagate(model, 1, inputs[i], inputs[i], lo, hi));
        int pred = 0;
        for (int k = 1; k < 3; k++)
            if (lo[k] + hi[k] > lo[pred] + hi[pred]) pred = k;
        printf("input (%+.2f, %+.2f): predicted class %d\n", inputs[i][0], inputs[i][1], pred);
        for (int e = 0; e < 4; e++) {
            float in_lo[2], in_hi[2], spec[2 * 3], s_lo[2], s_hi[2];
            for (int j = 0; j < 2; j++) {
                in_lo[j] = inputs[i][j] - eps[e];
                in_hi[j] = inputs[i][j] + eps[e];
            }
            /* Rows y_pred - y_other for both other classes. */
            memset(spec, 0, sizeof spec);
            for (int r = 0, other = 0; other < 3; other++) {
                if (other == pred) continue;
                spec[r * 3 + pred] = 1.0f;
                spec[r * 3 + other] = -1.0f;
                r++;
            }
            ibp_propagate_options po;
            memset(&po, 0, sizeof po);
            po.struct_size = sizeof po;
            po.memory = IBP_MEMORY_HOST;
            po.spec_rows = 2;
            po.spec_c = spec;
            CHECK(ibp_propagate_ex(model, 1, in_lo, in_hi, s_lo, s_hi, &po));
            int ok = s_lo[0] > 0.0f && s_lo[1] > 0.0f;
            printf("  eps %.3f: margin over the others >= %+.4f, %+.4f -> %s\n", eps[e], s_lo[0], s_lo[1],
                   ok ? "CERTIFIED" : "not certified (bounds too wide, or a real counterexample)");
            if (e == 0 && !ok) certified_small = 0;
        }
    }
    /* A NaN input is refused, never silently propagated. */
    {
        const float bad[2] = {0.0f / 0.0f, 0.0f};
        float lo[3], hi[3];
        if (ibp_propagate(model, 1, bad, bad, lo, hi) != VRAM_ERR_INVALID_ARGUMENT) goto fail;
        printf("a NaN input box is rejected with VRAM_ERR_INVALID_ARGUMENT\n");
    }
    rc = certified_small ? 0 : 1;
fail:
    ibp_builder_free(b);
    ibp_model_free(model);
    vram_ctx_free(ctx);
    printf("%s\n", rc == 0 ? "ibp_certify: OK" : "ibp_certify: FAILED");
    return rc;
}
