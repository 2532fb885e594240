/* Internal interface between libvram's Rust code and its CUDA code. Not installed, not
 * exported from libvram.so (the symbol test checks): every function returns a cudaError_t
 * value (0 = success) and never aborts. */
#ifndef LVK_H
#define LVK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Pointer kinds reported by lvk_pointer_kind. */
#define LVK_PTR_UNREGISTERED 0
#define LVK_PTR_HOST 1
#define LVK_PTR_DEVICE 2
#define LVK_PTR_MANAGED 3

int lvk_device_count(int *count);
int lvk_get_device(int *device);
int lvk_set_device(int device);
int lvk_mem_info(size_t *free_bytes, size_t *total_bytes);
int lvk_pointer_kind(const void *ptr, int *kind, int *device);
/* Verdicts of lvk_device_range. */
#define LVK_RANGE_OK 0
#define LVK_RANGE_PAST_END 1      /* runs past the allocation (or the mapped VMM range) */
#define LVK_RANGE_FOREIGN 2       /* reaches memory that is not device memory of `device` */
#define LVK_RANGE_UNCHECKABLE 3   /* the driver cannot answer the address-range query */

#define LVK_NOT_READY 600 /* cudaErrorNotReady */
/* Whether [ptr, ptr + len) lies inside device memory of `device`: one allocation of
 * cudaMalloc / cudaMallocAsync, or consecutive mappings of the virtual memory management API
 * (cuMemCreate + cuMemMap, as PyTorch's expandable segments use). `*valid` receives how many
 * bytes from ptr were found valid. Queries only; never touches the memory. */
int lvk_device_range(const void *ptr, size_t len, int device, int *verdict, size_t *valid);
const char *lvk_error_string(int code);

int lvk_stream_create(void **stream);
int lvk_stream_destroy(void *stream);
int lvk_stream_sync(void *stream);
/* The CUDA runtime version libvram was built with (e.g. 13000) and the installed driver's
 * (0 without a driver). */
int lvk_versions(int *runtime, int *driver);
int lvk_event_create(void **event);
int lvk_event_destroy(void *event);

int lvk_malloc_async(void **ptr, size_t size, void *stream);
int lvk_free_async(void *ptr, void *stream);
/* Scratch memory (IBP workspaces) from libvram's pool for the current device, which keeps up
 * to LVK_SCRATCH_KEEP bytes mapped between calls; freed with lvk_free_async. */
#define LVK_SCRATCH_KEEP (1ull << 30)
int lvk_scratch_malloc_async(void **ptr, size_t size, void *stream);
/* Page-locked host memory that kernels on every device read and write at the same address
 * (mapped, portable; unified addressing); freed with lvk_host_free. */
int lvk_host_alloc(void **ptr, size_t size);
int lvk_host_free(void *ptr);
int lvk_memcpy_h2d_async(void *dst, const void *src, size_t n, void *stream);
int lvk_memcpy_d2h_async(void *dst, const void *src, size_t n, void *stream);
/* Makes `waiter` wait for all work queued so far on `signaller`. */
int lvk_stream_after(void *waiter, void *signaller, void *event);
/* Records `event` on `stream`; waits on the host until the work before it is done. */
int lvk_event_record(void *event, void *stream);
int lvk_event_sync(void *event);
/* 0 when the work before the event is done, LVK_NOT_READY while it runs. */
int lvk_event_query(void *event);

/* Fault drill: XORs `mask` into the byte at `ptr + offset`. */
int lvk_flip_byte(void *ptr, uint64_t offset, uint8_t mask, void *stream);

/* One shard of a Merkle batch. */
typedef struct lvk_job {
    const uint8_t *data;   /* device bytes */
    uint64_t len;          /* > 0 */
    uint64_t first_region; /* index of this job's first region in the batch */
    uint32_t leaf_size;    /* power of two, 1 KiB .. 1 MiB */
    uint32_t region_leaves;/* leaves per region: 1 MiB / leaf_size, at least 1 */
} lvk_job;

/* Computes the RFC 9162 root of every region of every job: `roots` receives
 * 32 bytes per region (big-endian SHA-256 output), in batch order. `jobs` is a device array
 * sorted by first_region; `max_region_leaves` bounds every job's region_leaves (<= 1024). */
int lvk_region_roots(const lvk_job *jobs, uint32_t n_jobs, uint64_t total_regions,
                     uint32_t max_region_leaves, uint8_t *roots, void *stream);

/* The scrubber's fast tier (cuda/scrub.cu): one keyed polynomial digest per 1 MiB region of
 * every job (`data` at the job's first region, `len` its bytes; leaf fields unused), into
 * `digests` (8 bytes per region, batch order), from a grid of at most `blocks` blocks (so at most
 * that many SMs). `powers` is a device copy of src/scrub/digest.rs's PowerTable. */
int lvk_fast_digests(const lvk_job *jobs, uint32_t n_jobs, uint64_t total_regions,
                     const uint64_t *powers, uint64_t *digests, uint32_t blocks, void *stream);
/* Multiprocessors of the current device. */
int lvk_sm_count(int *count);

/* Interval bound propagation (cuda/ibp.cu). Bounds between layers are f64 pairs, item-major
 * ([batch][features]); every operation rounds outward. */
/* Also sets *first_bad to all ones first (stream-ordered), then to the first bad index, if any. */
int lvk_ibp_to_f64(const float *lo, const float *hi, double *dlo, double *dhi, uint64_t n,
                   unsigned long long *first_bad, void *stream);
/* Writes nothing unless *guard (the first-bad flag of lvk_ibp_to_f64) is all ones; copies
 * *guard to *flag_out (nullable: page-locked host memory from lvk_host_alloc) either way. */
int lvk_ibp_to_f32(const double *dlo, const double *dhi, float *lo, float *hi, uint64_t n,
                   const unsigned long long *guard, unsigned long long *flag_out, void *stream);
int lvk_ibp_normalize(const double *params, uint32_t n, uint64_t total, const double *lo,
                      const double *hi, double *olo, double *ohi, void *stream);
int lvk_ibp_activation(int kind, double alpha, uint64_t n, const double *lo, const double *hi,
                       double *olo, double *ohi, void *stream);
int lvk_ibp_add(uint64_t n, const double *alo, const double *ahi, const double *blo,
                const double *bhi, double *olo, double *ohi, void *stream);
/* shape: cin, h, w, cout, oh, ow, kh, kw, stride h/w, pad h/w, dilation h/w, groups. */
int lvk_ibp_conv2d(const float *w, const float *bias, const uint32_t shape[15], uint32_t batch,
                   const double *lo, const double *hi, double *olo, double *ohi, int relu,
                   int tensor_cores, void *stream);
/* shape: c, h, w, oh, ow, kh, kw, stride h/w, pad h/w. */
int lvk_ibp_pool(int is_max, const uint32_t shape[11], uint32_t batch, const double *lo,
                 const double *hi, double *olo, double *ohi, void *stream);
/* params: gamma, beta, mean, var (channels floats each). */
int lvk_ibp_batchnorm(const float *params, double eps, uint32_t channels, uint32_t per_channel,
                      uint32_t batch, const double *lo, const double *hi, double *olo, double *ohi,
                      void *stream);
/* relu != 0 applies ReLU to the outputs (a fused following ReLU layer), here and in conv2d;
 * tensor_cores != 0 lets batches over 8 (conv2d: any batch) run on FP64 tensor cores. */
int lvk_ibp_linear(const float *w, const float *bias, uint32_t in_f, uint32_t out_f, uint32_t batch,
                   const double *lo, const double *hi, double *olo, double *ohi, int relu,
                   int tensor_cores, void *stream);


/* FP64 tensor-core versions (cuda/ibp_mma.cu), for devices of compute capability 9.0 or newer:
 * centre / radius products with a rounding-error term. lvk_ibp_linear and lvk_ibp_conv2d call
 * them when their `tensor_cores` argument allows it and the device has them. */
int lvk_ibp_linear_mma(const float *w, const float *bias, uint32_t in_f, uint32_t out_f, uint32_t batch,
                       const double *lo, const double *hi, double *olo, double *ohi, int relu,
                       void *stream);
int lvk_ibp_conv2d_mma(const float *w, const float *bias, const uint32_t shape[15], uint32_t batch,
                       const double *lo, const double *hi, double *olo, double *ohi, int relu,
                       void *stream);

/* Small batches (1 to 8) in centre / radius form (cuda/ibp_gemv.cu); lvk_ibp_linear calls it. */
int lvk_ibp_linear_gemv(const float *w, const float *bias, uint32_t in_f, uint32_t out_f, uint32_t batch,
                        const double *lo, const double *hi, double *olo, double *ohi, int relu,
                        void *stream);

/* Sound linear bounds for chains of dense layers (cuda/crown.cu). One layer of the chain; the
 * array lives in device memory. */
typedef struct lvk_crown_layer {
    const float *w;       /* [out_f][in_f], the sealed weights (device) */
    const float *bias;    /* out_f values, or NULL */
    double gamma;         /* >= the relative rounding bound of a dot product of out_f + 2 terms */
    uint32_t in_f, out_f;
    uint32_t relu;        /* a ReLU follows this layer (never on the last one) */
    uint32_t offset;      /* where this layer's outputs start in the per-box bounds */
    uint32_t colmax_at;   /* where this layer's in_f column maxima start in the colmax array */
    uint32_t reserved;    /* 0 */
} lvk_crown_layer;

/* Every layer's bounds of boxes kept on the device between calls (a branch and bound's open
 * boxes): slot k holds total_out lower then total_out upper bounds at nodes + 2·total_out·k. A
 * box whose outer_slot is below `slots` starts from (intersects with) that slot's bounds, which
 * must hold on it; one whose self_slot is below `slots` writes its own there. NULL arrays: none. */
typedef struct lvk_crown_store {
    double *nodes;
    uint32_t slots, total_out;
    const uint32_t *outer_slot; /* per box, device */
    const uint32_t *self_slot;  /* per box, device */
} lvk_crown_store;

/* Rows per backward pass and the dynamic shared memory one block needs on the current device,
 * for lvk_crown_bounds with the same textbook flag (0 for relaxations 0 and 2) (cudaErrorInvalidConfiguration when even
 * four rows do not fit). */
int lvk_crown_rows_per_pass(uint32_t n_layers, uint32_t n_in, uint32_t width, uint32_t total_out,
                            uint32_t textbook, uint32_t *rp, size_t *smem);
/* Writes every layer's column maxima, max_o |w[o][i]| (infinite for a column with a NaN), from
 * its weights into colmax (device, the sum of the layers' in_f values). They size the rounding
 * charges, so they are computed from the sealed bytes on every call, never kept. */
int lvk_crown_colmax(const lvk_crown_layer *layers, uint32_t n_layers, uint32_t width, double *colmax,
                     void *stream);
/* For each of `batch` boxes ([batch][n_in] f64, lo <= hi, finite): lower[batch][n_rows] sound
 * lower bounds of rows·y (rows: [n_rows][output size] f64), out_lo / out_hi [batch][output
 * size] sound output bounds, and (coeffs and offsets, both or neither NULL) the linear bound
 * itself: coeffs [batch][n_rows][n_in] and offsets [batch][n_rows] such that
 * rows_r·y >= coeffs_r·x + offsets_r at every point x of the box. `width` >= every layer's
 * in_f and out_f and n_in; total_out = the sum of the layers' out_f; rp and smem from
 * lvk_crown_rows_per_pass; colmax from lvk_crown_colmax on the same stream; store (host struct
 * of device pointers) NULL or as above. relaxation 0: the neurons IBP leaves unstable are bounded
 * by backward passes and their bounds intersected with IBP's; 1: textbook CROWN (auto_LiRPA's),
 * every ReLU input past the first layer bounded by a backward pass alone; 2 (guarded): 0, and
 * where the intersection first changed a bound (layer k), a second launch from k with the
 * backward-pass bounds alone (at k of every neuron, past k of those IBP leaves unstable), each
 * row and output bound the better of the two; coeffs, offsets and the store are the first
 * pass's. rp and smem for 2 are those for 0. guard (device, guard_boxes ×
 * lvk_crown_guard_bytes): 2's records, guard_boxes boxes at a time; NULL / 0 for 0 and 1. */
int lvk_crown_bounds(const lvk_crown_layer *layers, uint32_t n_layers, uint32_t n_in, uint32_t width,
                     uint32_t total_out, uint32_t rp, size_t smem, const double *colmax, uint32_t batch,
                     const double *lo, const double *hi, const double *rows, uint32_t n_rows, double *lower,
                     double *out_lo, double *out_hi, double *coeffs, double *offsets,
                     const lvk_crown_store *store, uint32_t relaxation, double *guard, uint32_t guard_boxes,
                     void *stream);
/* Bytes of one box's record for lvk_crown_bounds's guarded relaxation. */
size_t lvk_crown_guard_bytes(uint32_t total_out, uint32_t width);
/* Linear bounds of f32 boxes in device memory: for each of `batch` items and each of `rows`
 * rows, out = [max(ibp_lo, down(l + d)), min(ibp_hi, up(d - u))], with l = lower[b][r] and
 * u = lower[b][rows + r] (lower: [batch][2·rows] from lvk_crown_bounds over the rows and their
 * negations; with lower2 not NULL, of the same shape, the larger of the two), rounded outward to
 * f32; items whose box (box_lo / box_hi, [batch][n_in] f64, as
 * lvk_crown_bounds read it) has an infinite bound keep [ibp_lo, ibp_hi]. All device memory;
 * out may not alias the rest. */
int lvk_crown_narrow(const double *box_lo, const double *box_hi, uint32_t n_in, const double *lower,
                     const double *lower2, const double *d, uint32_t rows, uint64_t batch, const float *ibp_lo,
                     const float *ibp_hi, float *out_lo, float *out_hi, void *stream);

#ifdef __cplusplus
}
#endif
#endif
