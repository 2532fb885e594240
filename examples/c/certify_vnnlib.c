/* certify_vnnlib: a sound verdict about a sealed network, from a VNN-LIB property.
 *
 *   certify_vnnlib [NET.onnx PROP.vnnlib [TIMEOUT_S]]
 *
 * With no arguments it builds a small ReLU network with the builder,
 * y = relu(x0 - x1) + relu(x0 + x1), whose range over [0,1]^2 is exactly [0, 2], writes two
 * properties to temporary files and checks that libvram proves the first (y >= -0.001
 * everywhere: HOLDS) and refutes the second with a counterexample (y >= 1.9 somewhere:
 * VIOLATED), the counterexample inside the box and really unsafe. With a network and a
 * property it prints the verdict and, for a violation, the counterexample.
 * Exits 0 when every step behaves as documented. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vram.h"

#define CHECK(call)                                                                        \
    do {                                                                                   \
        vram_status s_ = (call);                                                           \
        if (s_ != VRAM_OK) {                                                               \
            char m_[VRAM_MAX_ERROR_MESSAGE + 1];                                           \
            vram_last_error_message(m_, sizeof m_);                                        \
            fprintf(stderr, "%s -> %s: %s\n", #call, vram_status_str(s_), m_);             \
            goto fail;                                                                     \
        }                                                                                  \
    } while (0)

static const char *verdict_name(uint32_t v) {
    switch (v) {
    case IBP_VERDICT_HOLDS: return "holds";
    case IBP_VERDICT_VIOLATED: return "violated";
    default: return "unknown";
    }
}

static int on_progress(void *userdata, uint64_t boxes, double proven) {
    (void)userdata;
    (void)boxes;
    return proven < 0.0 || proven > 1.0; /* never cancels; a bad fraction would */
}

static const char *BOX = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
                         "(declare-const Y_0 Real)\n"
                         "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n"
                         "(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n";

static int write_property(const char *path, const char *unsafe_if) {
    FILE *f = fopen(path, "w");
    if (f == NULL) return -1;
    fprintf(f, "%s%s\n", BOX, unsafe_if);
    return fclose(f);
}

static vram_status run(const ibp_model *model, const char *prop_path, double timeout,
                       ibp_certify_result *result, double *x, double *y_lo, double *y_hi) {
    ibp_spec *spec = NULL;
    vram_status s = ibp_spec_from_vnnlib(prop_path, &spec);
    if (s != VRAM_OK) return s;
    ibp_certify_options opts;
    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    opts.timeout_seconds = timeout;
    opts.progress = on_progress;
    memset(result, 0, sizeof *result);
    result->struct_size = sizeof *result;
    result->counterexample = x;
    result->counterexample_out_lower = y_lo;
    result->counterexample_out_upper = y_hi;
    s = ibp_certify(model, spec, &opts, result);
    ibp_spec_free(spec);
    return s;
}

static void print_result(const ibp_certify_result *r, size_t n_in, size_t n_out, const double *x,
                         const double *y_lo, const double *y_hi) {
    size_t i;
    printf("%s after %llu boxes, %.2f%% proven, %.3f s; weights root ", verdict_name(r->verdict),
           (unsigned long long)r->boxes, 100.0 * r->proven_fraction, r->seconds);
    for (i = 0; i < 32; i++) printf("%02x", r->weights_root[i]);
    printf("\n");
    if (r->verdict == IBP_VERDICT_VIOLATED) {
        for (i = 0; i < n_in; i++) printf("  X_%zu = %.17g\n", i, x[i]);
        for (i = 0; i < n_out; i++) printf("  Y_%zu in [%.17g, %.17g]\n", i, y_lo[i], y_hi[i]);
    }
}

int main(int argc, char **argv) {
    static const uint8_t secret[32] = "certify_vnnlib example secret!!";
    vram_ctx *ctx = NULL;
    ibp_builder *b = NULL;
    ibp_model *model = NULL;
    vram_ctx_options copts;
    ibp_certify_result r;
    double x[16], y_lo[16], y_hi[16];
    int ok = 0;

    memset(&copts, 0, sizeof copts);
    copts.struct_size = sizeof copts;
    copts.backend = VRAM_BACKEND_HOST; /* the search runs on the CPU over host-sealed weights */
    copts.key = secret;
    copts.key_len = sizeof secret;
    CHECK(vram_ctx_new(&copts, &ctx));

    if (argc >= 3) {
        double timeout = argc >= 4 ? atof(argv[3]) : 300.0;
        CHECK(ibp_model_from_onnx(ctx, argv[1], NULL, &model));
        if (ibp_model_input_size(model) > 16 || ibp_model_output_size(model) > 16) {
            fprintf(stderr, "this example prints networks of at most 16 inputs and outputs\n");
            goto fail;
        }
        CHECK(run(model, argv[2], timeout, &r, x, y_lo, y_hi));
        print_result(&r, ibp_model_input_size(model), ibp_model_output_size(model), x, y_lo,
                     y_hi);
        ok = 1;
    } else {
        static const float w1[4] = {1.0f, -1.0f, 1.0f, 1.0f}, b1[2] = {0.0f, 0.0f};
        static const float w2[2] = {1.0f, 1.0f}, b2[1] = {0.0f};
        const uint64_t shape[1] = {2};
        char holds_path[64], violated_path[64];
        uint32_t node;
        double y;
        CHECK(ibp_builder_new(ctx, "vee", shape, 1, &b));
        CHECK(ibp_builder_add_linear(b, IBP_PREV, 2, w1, b1, &node));
        CHECK(ibp_builder_add_relu(b, IBP_PREV, &node));
        CHECK(ibp_builder_add_linear(b, IBP_PREV, 1, w2, b2, &node));
        CHECK(ibp_builder_build(b, &model));
        b = NULL;
        snprintf(holds_path, sizeof holds_path, "/tmp/vram-example-holds-%ld.vnnlib",
                 (long)getpid());
        snprintf(violated_path, sizeof violated_path, "/tmp/vram-example-violated-%ld.vnnlib",
                 (long)getpid());
        if (write_property(holds_path, "(assert (<= Y_0 -0.001))") != 0 ||
            write_property(violated_path, "(assert (>= Y_0 1.9))") != 0) {
            fprintf(stderr, "cannot write the property files under /tmp\n");
            goto fail;
        }
        CHECK(run(model, holds_path, 30.0, &r, x, y_lo, y_hi));
        print_result(&r, 2, 1, x, y_lo, y_hi);
        if (r.verdict != IBP_VERDICT_HOLDS || r.proven_fraction != 1.0) goto fail;
        CHECK(run(model, violated_path, 30.0, &r, x, y_lo, y_hi));
        print_result(&r, 2, 1, x, y_lo, y_hi);
        remove(holds_path);
        remove(violated_path);
        if (r.verdict != IBP_VERDICT_VIOLATED) goto fail;
        y = (x[0] - x[1] > 0 ? x[0] - x[1] : 0) + (x[0] + x[1] > 0 ? x[0] + x[1] : 0);
        if (x[0] < 0 || x[0] > 1 || x[1] < 0 || x[1] > 1 || y < 1.9 || y < y_lo[0] ||
            y > y_hi[0]) {
            fprintf(stderr, "the counterexample does not check out: y = %.17g\n", y);
            goto fail;
        }
        printf("counterexample checked: y = %.17g >= 1.9\n", y);
        ok = 1;
    }
fail:
    ibp_builder_free(b);
    ibp_model_free(model);
    vram_ctx_free(ctx);
    return ok ? 0 : 1;
}
