// The device memory layer: allocation, copies, device selection, pointer checks, the fault
// drill. Stream-ordered throughout: libvram lives inside a server whose other kernels must
// keep running, so nothing here synchronises the whole device.
#include <cuda.h> /* types only: driver functions are found at run time (see driver_fns) */
#include <cuda_runtime.h>

#include <pthread.h>

#include "lvk.h"

extern "C" int lvk_device_count(int *count) {
    if (count == nullptr) return cudaErrorInvalidValue;
    *count = 0;
    cudaError_t e = cudaGetDeviceCount(count);
    if (e != cudaSuccess) *count = 0;
    return e;
}

extern "C" int lvk_versions(int *runtime, int *driver) {
    if (runtime == nullptr || driver == nullptr) return cudaErrorInvalidValue;
    *runtime = 0;
    *driver = 0;
    cudaError_t e = cudaRuntimeGetVersion(runtime);
    if (e != cudaSuccess) return e;
    return cudaDriverGetVersion(driver); // 0 when no driver is installed
}

extern "C" int lvk_get_device(int *device) {
    if (device == nullptr) return cudaErrorInvalidValue;
    return cudaGetDevice(device);
}

extern "C" int lvk_set_device(int device) { return cudaSetDevice(device); }

extern "C" int lvk_mem_info(size_t *free_bytes, size_t *total_bytes) {
    if (free_bytes == nullptr || total_bytes == nullptr) return cudaErrorInvalidValue;
    return cudaMemGetInfo(free_bytes, total_bytes);
}

extern "C" int lvk_pointer_kind(const void *ptr, int *kind, int *device) {
    if (kind == nullptr || device == nullptr) return cudaErrorInvalidValue;
    *kind = LVK_PTR_UNREGISTERED;
    *device = -1;
    if (ptr == nullptr) return cudaErrorInvalidValue;
    cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, ptr);
    if (e != cudaSuccess) return e;
    switch (a.type) {
        case cudaMemoryTypeHost: *kind = LVK_PTR_HOST; break;
        case cudaMemoryTypeDevice: *kind = LVK_PTR_DEVICE; break;
        case cudaMemoryTypeManaged: *kind = LVK_PTR_MANAGED; break;
        default: *kind = LVK_PTR_UNREGISTERED; break;
    }
    *device = a.device;
    return cudaSuccess;
}

// libvram links only the static CUDA runtime (no libcuda in its NEEDED list), so the few
// driver functions it needs are looked up through the runtime's entry-point query, once.
namespace {
typedef CUresult (*AddressRangeFn)(CUdeviceptr *, size_t *, CUdeviceptr);
typedef CUresult (*RetainHandleFn)(CUmemGenericAllocationHandle *, void *);
typedef CUresult (*ReleaseHandleFn)(CUmemGenericAllocationHandle);

struct DriverFns {
    AddressRangeFn address_range;
    RetainHandleFn retain_handle;
    ReleaseHandleFn release_handle;
};

DriverFns g_driver;
pthread_once_t g_driver_once = PTHREAD_ONCE_INIT;

template <typename F> void lookup(const char *name, F *out) {
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found) ==
            cudaSuccess &&
        found == cudaDriverEntryPointSuccess) {
        *out = reinterpret_cast<F>(fn);
    }
}

void load_driver_fns() {
    lookup("cuMemGetAddressRange", &g_driver.address_range);
    lookup("cuMemRetainAllocationHandle", &g_driver.retain_handle);
    lookup("cuMemRelease", &g_driver.release_handle);
}

const DriverFns *driver_fns() {
    pthread_once(&g_driver_once, load_driver_fns);
    return &g_driver;
}

// Whether `p` is memory mapped through the virtual memory management API (cuMemMap): only
// such memory has an allocation handle to retain.
bool is_vmm(const DriverFns *d, uintptr_t p) {
    if (d->retain_handle == nullptr || d->release_handle == nullptr) return false;
    CUmemGenericAllocationHandle h = 0;
    if (d->retain_handle(&h, reinterpret_cast<void *>(p)) != CUDA_SUCCESS) return false;
    d->release_handle(h);
    return true;
}

bool device_memory_of(uintptr_t p, int device) {
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, reinterpret_cast<void *>(p)) != cudaSuccess) {
        cudaGetLastError(); // a failed query is not sticky; clear it for the caller's next call
        return false;
    }
    return a.type == cudaMemoryTypeDevice && a.device == device;
}
} // namespace

extern "C" int lvk_device_range(const void *ptr, size_t len, int device, int *verdict,
                                size_t *valid) {
    if (verdict == nullptr || valid == nullptr || ptr == nullptr || len == 0)
        return cudaErrorInvalidValue;
    *verdict = LVK_RANGE_UNCHECKABLE;
    *valid = 0;
    const DriverFns *d = driver_fns();
    if (d->address_range == nullptr) return cudaSuccess;
    const uintptr_t start = reinterpret_cast<uintptr_t>(ptr);
    if (len > UINTPTR_MAX - start) {
        *verdict = LVK_RANGE_PAST_END;
        return cudaSuccess;
    }
    const uintptr_t end = start + len;
    uintptr_t at = start;
    const bool vmm = is_vmm(d, start);
    // VMM mappings are at least 64 KiB each, so a valid range crosses at most len / 64 KiB + 1
    // of them: the walk is bounded by the length the caller declared.
    const size_t max_segments = len / (64u << 10) + 2;
    for (size_t segment = 0; segment < max_segments; ++segment) {
        if (!device_memory_of(at, device)) {
            *verdict = at == start ? LVK_RANGE_FOREIGN : (vmm ? LVK_RANGE_FOREIGN : LVK_RANGE_PAST_END);
            *valid = at - start;
            return cudaSuccess;
        }
        CUdeviceptr base = 0;
        size_t size = 0;
        if (d->address_range(&base, &size, static_cast<CUdeviceptr>(at)) != CUDA_SUCCESS ||
            base > at || size == 0 || size > UINTPTR_MAX - base) {
            *verdict = LVK_RANGE_PAST_END;
            *valid = at - start;
            return cudaSuccess;
        }
        const uintptr_t segment_end = static_cast<uintptr_t>(base) + size;
        if (end <= segment_end) {
            *verdict = LVK_RANGE_OK;
            *valid = len;
            return cudaSuccess;
        }
        // Past this allocation: only a VMM range may continue into the next mapping, and
        // only into another VMM mapping that starts exactly here.
        at = segment_end;
        if (!vmm || !is_vmm(d, at)) {
            *verdict = LVK_RANGE_PAST_END;
            *valid = at - start;
            return cudaSuccess;
        }
    }
    *verdict = LVK_RANGE_PAST_END;
    *valid = at - start;
    return cudaSuccess;
}

extern "C" const char *lvk_error_string(int code) {
    return cudaGetErrorString(static_cast<cudaError_t>(code));
}

extern "C" int lvk_stream_create(void **stream) {
    if (stream == nullptr) return cudaErrorInvalidValue;
    *stream = nullptr;
    cudaStream_t s = nullptr;
    cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (e == cudaSuccess) *stream = s;
    return e;
}

extern "C" int lvk_stream_destroy(void *stream) {
    if (stream == nullptr) return cudaSuccess;
    return cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

extern "C" int lvk_stream_sync(void *stream) {
    return cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
}

extern "C" int lvk_event_create(void **event) {
    if (event == nullptr) return cudaErrorInvalidValue;
    *event = nullptr;
    cudaEvent_t ev = nullptr;
    cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (e == cudaSuccess) *event = ev;
    return e;
}

extern "C" int lvk_event_destroy(void *event) {
    if (event == nullptr) return cudaSuccess;
    return cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

extern "C" int lvk_malloc_async(void **ptr, size_t size, void *stream) {
    if (ptr == nullptr || size == 0) return cudaErrorInvalidValue;
    *ptr = nullptr;
    void *p = nullptr;
    cudaError_t e = cudaMallocAsync(&p, size, static_cast<cudaStream_t>(stream));
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); // clear the sticky-free error so later calls are not blamed
        return e;
    }
    *ptr = p;
    return cudaSuccess;
}

namespace {
// Scratch pools, one per device, created on first use. The device's default pool hands
// freed memory back to the driver at every synchronisation, so a propagation that needs
// hundreds of MB of bounds would map and unmap them on every call (measured: 0.2 ms for
// 134 MB); this pool keeps up to LVK_SCRATCH_KEEP bytes mapped between calls instead.
constexpr int MAX_DEVICES = 64;
cudaMemPool_t scratch_pools[MAX_DEVICES];
pthread_mutex_t scratch_lock = PTHREAD_MUTEX_INITIALIZER; // libc's: libvram does not link libstdc++

cudaError_t scratch_pool(cudaMemPool_t *out) {
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    if (dev < 0 || dev >= MAX_DEVICES) return cudaErrorInvalidDevice;
    if (pthread_mutex_lock(&scratch_lock) != 0) return cudaErrorUnknown;
    e = cudaSuccess;
    if (scratch_pools[dev] == nullptr) {
        cudaMemPoolProps props = {};
        props.allocType = cudaMemAllocationTypePinned;
        props.location.type = cudaMemLocationTypeDevice;
        props.location.id = dev;
        cudaMemPool_t pool = nullptr;
        e = cudaMemPoolCreate(&pool, &props);
        if (e == cudaSuccess) {
            uint64_t keep = LVK_SCRATCH_KEEP;
            e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
            if (e == cudaSuccess) scratch_pools[dev] = pool;
            else (void)cudaMemPoolDestroy(pool);
        }
    }
    *out = scratch_pools[dev];
    (void)pthread_mutex_unlock(&scratch_lock);
    return e;
}
} // namespace

extern "C" int lvk_scratch_malloc_async(void **ptr, size_t size, void *stream) {
    if (ptr == nullptr || size == 0) return cudaErrorInvalidValue;
    *ptr = nullptr;
    cudaMemPool_t pool = nullptr;
    cudaError_t e = scratch_pool(&pool);
    if (e != cudaSuccess) return e;
    void *p = nullptr;
    e = cudaMallocFromPoolAsync(&p, size, pool, static_cast<cudaStream_t>(stream));
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return e;
    }
    *ptr = p;
    return cudaSuccess;
}

extern "C" int lvk_free_async(void *ptr, void *stream) {
    if (ptr == nullptr) return cudaSuccess;
    return cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream));
}

extern "C" int lvk_host_alloc(void **ptr, size_t size) {
    if (ptr == nullptr || size == 0) return cudaErrorInvalidValue;
    *ptr = nullptr;
    void *p = nullptr;
    cudaError_t e = cudaHostAlloc(&p, size, cudaHostAllocPortable | cudaHostAllocMapped);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return e;
    }
    *ptr = p;
    return cudaSuccess;
}

extern "C" int lvk_host_free(void *ptr) {
    if (ptr == nullptr) return cudaSuccess;
    return cudaFreeHost(ptr);
}

static bool ranges_ok(const void *dst, const void *src, size_t n) {
    if (dst == nullptr || src == nullptr || n == 0) return false;
    uintptr_t d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
    return d + n > d && s + n > s; // no address-space overflow
}

extern "C" int lvk_memcpy_h2d_async(void *dst, const void *src, size_t n, void *stream) {
    if (!ranges_ok(dst, src, n)) return cudaErrorInvalidValue;
    return cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream));
}

extern "C" int lvk_memcpy_d2h_async(void *dst, const void *src, size_t n, void *stream) {
    if (!ranges_ok(dst, src, n)) return cudaErrorInvalidValue;
    return cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream));
}

extern "C" int lvk_event_record(void *event, void *stream) {
    if (event == nullptr) return cudaErrorInvalidValue;
    return cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream));
}

extern "C" int lvk_event_sync(void *event) {
    if (event == nullptr) return cudaErrorInvalidValue;
    return cudaEventSynchronize(static_cast<cudaEvent_t>(event));
}

extern "C" int lvk_event_query(void *event) {
    if (event == nullptr) return cudaErrorInvalidValue;
    return cudaEventQuery(static_cast<cudaEvent_t>(event)); // cudaErrorNotReady is not sticky
}

extern "C" int lvk_stream_after(void *waiter, void *signaller, void *event) {
    if (event == nullptr) return cudaErrorInvalidValue;
    cudaEvent_t ev = static_cast<cudaEvent_t>(event);
    cudaError_t e = cudaEventRecord(ev, static_cast<cudaStream_t>(signaller));
    if (e != cudaSuccess) return e;
    return cudaStreamWaitEvent(static_cast<cudaStream_t>(waiter), ev, 0);
}

__global__ void flip_byte_kernel(uint8_t *p, uint8_t mask) { *p ^= mask; }

extern "C" int lvk_flip_byte(void *ptr, uint64_t offset, uint8_t mask, void *stream) {
    if (ptr == nullptr) return cudaErrorInvalidValue;
    flip_byte_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<uint8_t *>(ptr) + offset, mask);
    return cudaGetLastError();
}
