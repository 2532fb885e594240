/*
 * vram.hpp — C++17 header-only wrapper over vram.h (libvram's C ABI).
 *
 * - RAII owners for every handle (move-only): vram::context, vram::shard, vram::manifest,
 *   vram::model, vram::builder (C: ibp_builder), vram::network (C: ibp_model). Destructors call the matching *_free function.
 * - Errors: each operation has a throwing form (vram::error, a std::system_error carrying the
 *   status and the thread's last error message) and a `try_` form returning vram::result<T>
 *   (a value or a std::error_code plus the message) that never throws. Built with
 *   -fno-exceptions only the `try_` forms exist.
 * - (pointer, length) pairs are taken as vram::span views; two-call size queries are hidden.
 * - vram::set_log_callback takes any callable.
 *
 * Thread-safety is that of the C functions underneath (documented in vram.h): contexts,
 * shards, manifests and models may be used from many threads at once; a wrapper object itself
 * must not be moved or destroyed while another thread uses it.
 */
#ifndef VRAM_HPP
#define VRAM_HPP

#include <vram.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define VRAM_HPP_EXCEPTIONS 1
#else
#define VRAM_HPP_EXCEPTIONS 0
#endif

namespace vram {

/// The thread's last error message from libvram (empty when the last call succeeded).
inline std::string last_error_message() {
    const std::size_t n = vram_last_error_message(nullptr, 0);
    std::string s(n + 1, '\0');
    const std::size_t m = vram_last_error_message(s.data(), s.size());
    s.resize(m < n ? m : n);
    return s;
}

/// The std::error_category of vram_status values (names from vram_status_str()).
inline const std::error_category &category() noexcept {
    struct vram_category final : std::error_category {
        const char *name() const noexcept override { return "vram"; }
        std::string message(int code) const override {
            return vram_status_str(static_cast<vram_status>(code));
        }
    };
    static const vram_category c;
    return c;
}

inline std::error_code make_error_code(vram_status s) noexcept {
    return {static_cast<int>(s), category()};
}

/// A value, or the status and message of the call that failed. Never throws.
template <class T> class result {
  public:
    result(T value) : value_(std::move(value)) {}
    result(std::error_code ec, std::string message)
        : error_(ec), message_(std::move(message)) {}

    bool ok() const noexcept { return value_.has_value(); }
    explicit operator bool() const noexcept { return ok(); }
    /// The value; only after ok() returned true.
    T &value() & { return *value_; }
    T &&value() && { return std::move(*value_); }
    const std::error_code &error() const noexcept { return error_; }
    vram_status status() const noexcept { return static_cast<vram_status>(error_.value()); }
    const std::string &message() const noexcept { return message_; }

  private:
    std::optional<T> value_;
    std::error_code error_;
    std::string message_;
};

/// The outcome of a call that returns nothing.
template <> class result<void> {
  public:
    result() = default;
    result(std::error_code ec, std::string message)
        : error_(ec), message_(std::move(message)) {}

    bool ok() const noexcept { return !error_; }
    explicit operator bool() const noexcept { return ok(); }
    const std::error_code &error() const noexcept { return error_; }
    vram_status status() const noexcept { return static_cast<vram_status>(error_.value()); }
    const std::string &message() const noexcept { return message_; }

  private:
    std::error_code error_;
    std::string message_;
};

namespace detail {
/// A failed result of status `s` with the thread's last message.
template <class T> result<T> fail(vram_status s) {
    return result<T>(make_error_code(s), last_error_message());
}
} // namespace detail

#if VRAM_HPP_EXCEPTIONS
/// A libvram error: the status (code()) and the thread's last error message (what()).
class error : public std::system_error {
  public:
    error(std::error_code ec, const std::string &message) : std::system_error(ec, message) {}
    vram_status status() const noexcept { return static_cast<vram_status>(code().value()); }
};

/// The value of `r`, or throws vram::error.
template <class T> T value_or_throw(result<T> r) {
    if (!r.ok()) throw error(r.error(), r.message());
    return std::move(r).value();
}
inline void value_or_throw(result<void> r) {
    if (!r.ok()) throw error(r.error(), r.message());
}
#endif

/// A non-owning view of `size()` elements at `data()` (std::span's shape, for C++17).
template <class T> class span {
  public:
    constexpr span() noexcept = default;
    constexpr span(T *data, std::size_t size) noexcept : data_(data), size_(size) {}
    /// Any contiguous container of T (std::vector, std::array, std::string for bytes...).
    template <class C, class = std::enable_if_t<std::is_convertible_v<
                           decltype(std::declval<C &>().data()), T *>>>
    constexpr span(C &c) noexcept : data_(c.data()), size_(c.size()) {}
    template <std::size_t N> constexpr span(T (&a)[N]) noexcept : data_(a), size_(N) {}

    constexpr T *data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }
    constexpr T *begin() const noexcept { return data_; }
    constexpr T *end() const noexcept { return data_ + size_; }

  private:
    T *data_ = nullptr;
    std::size_t size_ = 0;
};

/// Bytes to read.
using bytes = span<const std::uint8_t>;
/// A SHA-256 Merkle root.
using root = std::array<std::uint8_t, 32>;

/// Views any contiguous range of trivially copyable values as bytes.
template <class T> bytes as_bytes(span<const T> s) noexcept {
    static_assert(std::is_trivially_copyable_v<T>, "only plain data can be sealed as bytes");
    return bytes(reinterpret_cast<const std::uint8_t *>(s.data()), s.size() * sizeof(T));
}
template <class C> auto as_bytes(const C &c) noexcept {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(c.data())>>;
    return as_bytes(span<const T>(c.data(), c.size()));
}

namespace detail {
/// A move-only owner of a C handle, freed by `Free`.
template <class T, void (*Free)(T *)> class handle {
  public:
    handle() noexcept = default;
    explicit handle(T *p) noexcept : p_(p) {}
    handle(handle &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    handle &operator=(handle &&o) noexcept {
        if (this != &o) {
            reset();
            p_ = std::exchange(o.p_, nullptr);
        }
        return *this;
    }
    handle(const handle &) = delete;
    handle &operator=(const handle &) = delete;
    ~handle() { reset(); }

    /// The C handle, still owned by this object.
    T *get() const noexcept { return p_; }
    /// Gives up ownership: the caller frees the C handle.
    T *release() noexcept { return std::exchange(p_, nullptr); }
    explicit operator bool() const noexcept { return p_ != nullptr; }

  protected:
    void reset() noexcept {
        if (p_) Free(p_);
        p_ = nullptr;
    }
    T *p_ = nullptr;
};

/// Copies the fields a manifest's and a model's tensor infos share.
template <class Out, class Info> void tensor_fields(Out &t, const Info &info) {
    t.name = info.name;
    t.dtype = info.dtype;
    t.shape.assign(info.shape, info.shape + info.rank);
    t.byte_len = info.byte_len;
}

/// Calls a two-call size query `f(buf, len, &out_len)` and returns the bytes.
template <class F> result<std::vector<std::uint8_t>> read_sized(F f) {
    std::size_t n = 0;
    vram_status s = f(nullptr, 0, &n);
    if (s != VRAM_ERR_BUFFER_TOO_SMALL && s != VRAM_OK) return fail<std::vector<std::uint8_t>>(s);
    std::vector<std::uint8_t> out(n);
    s = f(out.data(), out.size(), &n);
    if (s != VRAM_OK) return fail<std::vector<std::uint8_t>>(s);
    out.resize(n);
    return out;
}
} // namespace detail

/// A sealed shard (vram_shard): frees itself.
class shard : public detail::handle<vram_shard, vram_shard_free> {
  public:
    using handle::handle;

    /// The Merkle root of the sealed bytes.
    root merkle_root() const {
        root r{};
        vram_shard_root(p_, r.data());
        return r;
    }
    std::size_t size() const noexcept { return vram_shard_len(p_); }
    /// Where the bytes live (device memory on the CUDA backend); owned by the shard.
    const void *data() const noexcept { return vram_shard_device_ptr(p_); }
    /// The shard's seal record (docs/seal-format.md).
    result<std::vector<std::uint8_t>> try_record() const {
        const vram_shard *p = p_;
        return detail::read_sized([p](std::uint8_t *b, std::size_t l, std::size_t *o) {
            return vram_shard_record(p, b, l, o);
        });
    }
#if VRAM_HPP_EXCEPTIONS
    std::vector<std::uint8_t> record() const { return value_or_throw(try_record()); }
#endif
    /// Fault drill (contexts opened with VRAM_CTX_ALLOW_FAULT_DRILLS only).
    result<void> try_debug_flip_bit(std::uint64_t bit) {
        const vram_status s = vram_debug_flip_bit(p_, bit);
        return s == VRAM_OK ? result<void>() : detail::fail<void>(s);
    }
};

/// One tensor of a manifest (strings owned by the manifest).
struct manifest_tensor {
    std::string name;
    std::string dtype;
    std::vector<std::uint64_t> shape;
    std::uint64_t byte_len = 0;
    root merkle_root{};
};

/// A model manifest (vram_manifest): frees itself.
class manifest : public detail::handle<vram_manifest, vram_manifest_free> {
  public:
    using handle::handle;

    std::string model_name() const {
        const char *n = vram_manifest_model(p_);
        return n ? n : "";
    }
    std::size_t tensor_count() const noexcept { return vram_manifest_tensor_count(p_); }
    result<manifest_tensor> try_tensor(std::size_t i) const {
        vram_manifest_tensor_info info{};
        info.struct_size = sizeof info;
        const vram_status s = vram_manifest_tensor(p_, i, &info);
        if (s != VRAM_OK) return detail::fail<manifest_tensor>(s);
        manifest_tensor t;
        detail::tensor_fields(t, info);
        for (std::size_t k = 0; k < 32; ++k) t.merkle_root[k] = info.root[k];
        return t;
    }
    /// The canonical bytes with their MAC (docs/manifest-format.md).
    result<std::vector<std::uint8_t>> try_export_bytes() const {
        const vram_manifest *p = p_;
        return detail::read_sized([p](std::uint8_t *b, std::size_t l, std::size_t *o) {
            return vram_manifest_export(p, b, l, o);
        });
    }
#if VRAM_HPP_EXCEPTIONS
    manifest_tensor tensor(std::size_t i) const { return value_or_throw(try_tensor(i)); }
    std::vector<std::uint8_t> export_bytes() const { return value_or_throw(try_export_bytes()); }
#endif
};

/// One tensor of a loaded model (pointers owned by the model).
struct model_tensor {
    std::string name;
    std::string dtype;
    std::vector<std::uint64_t> shape;
    std::uint64_t byte_len = 0;
    /// NULL for an empty tensor.
    const vram_shard *shard = nullptr;
    const void *data = nullptr;
};

/// A model loaded from safetensors (vram_model): frees itself and its shards.
class model : public detail::handle<vram_model, vram_model_free> {
  public:
    using handle::handle;

    std::size_t tensor_count() const noexcept { return vram_model_tensor_count(p_); }
    result<model_tensor> try_tensor(std::size_t i) const {
        vram_model_tensor_info info{};
        info.struct_size = sizeof info;
        const vram_status s = vram_model_tensor(p_, i, &info);
        if (s != VRAM_OK) return detail::fail<model_tensor>(s);
        model_tensor t;
        detail::tensor_fields(t, info);
        t.shard = info.shard;
        t.data = info.data;
        return t;
    }
#if VRAM_HPP_EXCEPTIONS
    model_tensor tensor(std::size_t i) const { return value_or_throw(try_tensor(i)); }
#endif
};

/// A VNN-LIB property (C: ibp_spec): frees itself.
class spec : public detail::handle<::ibp_spec, ::ibp_spec_free> {
  public:
    using handle::handle;

    /// Reads a VNN-LIB file (the subset VNN-COMP uses); errors name line and column.
    static result<spec> try_from_vnnlib(const std::string &path) {
        ::ibp_spec *out = nullptr;
        const vram_status s = ibp_spec_from_vnnlib(path.c_str(), &out);
        if (s != VRAM_OK) return detail::fail<spec>(s);
        return spec(out);
    }
#if VRAM_HPP_EXCEPTIONS
    static spec from_vnnlib(const std::string &path) { return value_or_throw(try_from_vnnlib(path)); }
#endif
    std::size_t input_count() const noexcept { return ibp_spec_input_count(p_); }
    std::size_t output_count() const noexcept { return ibp_spec_output_count(p_); }
    std::size_t case_count() const noexcept { return ibp_spec_case_count(p_); }
};

/// What network::try_certify found (see ibp_certify_result).
struct verdict {
    ibp_verdict kind = IBP_VERDICT_UNKNOWN;
    std::uint64_t boxes = 0;
    double proven_fraction = 0.0;
    double seconds = 0.0;
    std::array<std::uint8_t, 32> weights_root{};
    /// Violated: the counterexample and sound bounds of the outputs there.
    std::uint32_t case_index = 0;
    std::vector<double> counterexample, out_lower, out_upper;
    bool holds() const noexcept { return kind == IBP_VERDICT_HOLDS; }
    bool violated() const noexcept { return kind == IBP_VERDICT_VIOLATED; }
};

/// A certified-bounds network whose weights are sealed shards (C: ibp_model): frees itself.
class network : public detail::handle<::ibp_model, ::ibp_model_free> {
  public:
    using handle::handle;

    /// Decides `property` over this network (ibp_certify): holds, violated with a soundly
    /// checked counterexample, or unknown at `timeout_seconds`. Weights are verified before
    /// and after; a changed weight is VRAM_ERR_INTEGRITY, never a verdict.
    result<verdict> try_certify(const spec &property, double timeout_seconds = 300.0,
                                std::uint64_t seed = 0) const {
        verdict v;
        v.counterexample.resize(input_size());
        v.out_lower.resize(output_size());
        v.out_upper.resize(output_size());
        ibp_certify_options o{};
        o.struct_size = sizeof o;
        o.timeout_seconds = timeout_seconds;
        o.seed = seed;
        ibp_certify_result r{};
        r.struct_size = sizeof r;
        r.counterexample = v.counterexample.data();
        r.counterexample_out_lower = v.out_lower.data();
        r.counterexample_out_upper = v.out_upper.data();
        const vram_status s = ibp_certify(p_, property.get(), &o, &r);
        if (s != VRAM_OK) return detail::fail<verdict>(s);
        v.kind = static_cast<ibp_verdict>(r.verdict);
        v.boxes = r.boxes;
        v.proven_fraction = r.proven_fraction;
        v.seconds = r.seconds;
        std::copy(std::begin(r.weights_root), std::end(r.weights_root), v.weights_root.begin());
        v.case_index = r.case_index;
        if (!v.violated()) v.counterexample.clear(), v.out_lower.clear(), v.out_upper.clear();
        return v;
    }
#if VRAM_HPP_EXCEPTIONS
    verdict certify(const spec &property, double timeout_seconds = 300.0,
                    std::uint64_t seed = 0) const {
        return value_or_throw(try_certify(property, timeout_seconds, seed));
    }
#endif

    std::size_t input_size() const noexcept { return ibp_model_input_size(p_); }
    std::size_t output_size() const noexcept { return ibp_model_output_size(p_); }

    /// Output intervals guaranteed to enclose the exact ones, for `batch` input boxes. Every
    /// span must hold batch × (input or output) size floats: checked here, so a short buffer
    /// is VRAM_ERR_INVALID_ARGUMENT, never an overrun.
    result<void> try_propagate(std::size_t batch, span<const float> in_lower,
                               span<const float> in_upper, span<float> out_lower,
                               span<float> out_upper) const {
        const std::size_t n_in = batch * input_size(), n_out = batch * output_size();
        if (in_lower.size() != n_in || in_upper.size() != n_in || out_lower.size() != n_out ||
            out_upper.size() != n_out)
            return result<void>(make_error_code(VRAM_ERR_INVALID_ARGUMENT),
                                "propagate: a span's length is not batch x the layer size");
        const vram_status s = ibp_propagate(p_, batch, in_lower.data(), in_upper.data(),
                                            out_lower.data(), out_upper.data());
        return s == VRAM_OK ? result<void>() : detail::fail<void>(s);
    }
#if VRAM_HPP_EXCEPTIONS
    void propagate(std::size_t batch, span<const float> in_lower, span<const float> in_upper,
                   span<float> out_lower, span<float> out_upper) const {
        value_or_throw(try_propagate(batch, in_lower, in_upper, out_lower, out_upper));
    }
#endif
};

class context;
class network;

/// Builds a network layer by layer, each layer's weights sealed as it is added (C:
/// ibp_builder); frees itself unless built. One thread at a time.
///
/// Node sizes are tracked where they follow from the layers (input, linear, element-wise,
/// flatten, add), so a linear layer's weight span is checked against out_features × its
/// input's size before libvram reads it; after a convolution or pooling the C API's own
/// shape checks apply (the span must then hold what the parameters imply).
class builder : public detail::handle<::ibp_builder, ::ibp_builder_free> {
  public:
    using handle::handle;
    /// A node of the network (0 is the input).
    using node = std::uint32_t;

    static result<builder> try_create(const context &ctx, const std::string &name,
                                      span<const std::uint64_t> input_shape);

    result<node> try_linear(node input, std::uint64_t out_features, span<const float> weight,
                            span<const float> bias) {
        const std::uint64_t in = size_of(input);
        if (in != 0 && (weight.size() != out_features * in || bias.size() != out_features))
            return result<node>(make_error_code(VRAM_ERR_INVALID_ARGUMENT),
                                "linear: weight must hold out_features x input size floats, "
                                "bias out_features");
        node out = 0;
        const vram_status s =
            ibp_builder_add_linear(p_, input, out_features, weight.data(), bias.data(), &out);
        return added(s, out, out_features);
    }
    result<node> try_conv2d(node input, const ibp_conv2d_params &params, span<const float> weight,
                            span<const float> bias) {
        node out = 0;
        const vram_status s =
            ibp_builder_add_conv2d(p_, input, &params, weight.data(), bias.data(), &out);
        return added(s, out, 0);
    }
    result<node> try_relu(node input) { return unary(ibp_builder_add_relu, input); }
    result<node> try_sigmoid(node input) { return unary(ibp_builder_add_sigmoid, input); }
    result<node> try_tanh(node input) { return unary(ibp_builder_add_tanh, input); }
    result<node> try_flatten(node input) { return unary(ibp_builder_add_flatten, input); }
    result<node> try_leaky_relu(node input, float alpha) {
        node out = 0;
        const vram_status s = ibp_builder_add_leaky_relu(p_, input, alpha, &out);
        return added(s, out, size_of(input));
    }
    result<node> try_add(node a, node b) {
        node out = 0;
        const vram_status s = ibp_builder_add_add(p_, a, b, &out);
        return added(s, out, size_of(a));
    }
    result<node> try_maxpool2d(node input, const ibp_pool2d_params &params) {
        node out = 0;
        const vram_status s = ibp_builder_add_maxpool2d(p_, input, &params, &out);
        return added(s, out, 0);
    }
    result<node> try_avgpool2d(node input, const ibp_pool2d_params &params) {
        node out = 0;
        const vram_status s = ibp_builder_add_avgpool2d(p_, input, &params, &out);
        return added(s, out, 0);
    }
    /// The network, whose output is the last node added; the builder is used up either way.
    result<network> try_build();

#if VRAM_HPP_EXCEPTIONS
    static builder create(const context &ctx, const std::string &name,
                          span<const std::uint64_t> input_shape) {
        return value_or_throw(try_create(ctx, name, input_shape));
    }
    node linear(node input, std::uint64_t out_features, span<const float> weight,
                span<const float> bias) {
        return value_or_throw(try_linear(input, out_features, weight, bias));
    }
    node relu(node input) { return value_or_throw(try_relu(input)); }
    node add(node a, node b) { return value_or_throw(try_add(a, b)); }
    network build();
#endif

  private:
    /// Elements per batch item of each node; 0 where not tracked.
    std::vector<std::uint64_t> sizes_;

    std::uint64_t size_of(node n) const { return n < sizes_.size() ? sizes_[n] : 0; }
    result<node> added(vram_status s, node out, std::uint64_t size) {
        if (s != VRAM_OK) return detail::fail<node>(s);
        if (sizes_.size() <= out) sizes_.resize(out + 1, 0);
        sizes_[out] = size;
        return out;
    }
    result<node> unary(vram_status (*f)(::ibp_builder *, std::uint32_t, std::uint32_t *),
                       node input) {
        node out = 0;
        const vram_status s = f(p_, input, &out); // before `out` is read (argument order)
        return added(s, out, size_of(input));
    }
};

/// What a verify found (vram_verify_report) and whether the bytes are intact.
struct verify_result {
    vram_verify_report report{};
    bool intact = false;
};

/// A verify in flight (C: vram_verify_ticket), from context::try_verify_many_async(): frees
/// itself (waiting for its GPU work if it still runs).
class ticket : public detail::handle<vram_verify_ticket, vram_verify_ticket_free> {
  public:
    using handle::handle;
    /// Whether wait() would return at once (never blocks).
    result<bool> try_done() const {
        int done = 0;
        const vram_status s = vram_verify_ticket_query(p_, &done);
        if (s != VRAM_OK) return detail::fail<bool>(s);
        return done != 0;
    }
    /// Waits for this verify only, then one report per shard (a damaged shard is a result).
    result<std::vector<vram_verify_report>> try_wait(std::size_t n) const {
        std::vector<vram_verify_report> reports(n);
        const vram_status s = vram_verify_ticket_wait(p_, reports.data());
        if (s != VRAM_OK && s != VRAM_ERR_INTEGRITY && s != VRAM_ERR_BAD_SEAL)
            return detail::fail<std::vector<vram_verify_report>>(s);
        return reports;
    }
};

/// Fields of an authentic seal record.
using record_info = vram_record_info;

/// How a context is opened (see vram_ctx_options).
struct context_options {
    vram_backend backend = VRAM_BACKEND_AUTO;
    int device = 0;
    std::uint64_t capacity_bytes = 0;
    std::uint32_t flags = 0;
    std::uint32_t max_threads = 0;
};

/// A libvram context (vram_ctx): one backend, one seal key. Frees itself (after its shards,
/// which keep what they need alive).
class context : public detail::handle<vram_ctx, vram_ctx_free> {
  public:
    using handle::handle;

    /// Opens a context sealing under `key` (at least 32 bytes; copied).
    static result<context> try_open(bytes key, const context_options &o = {}) {
        vram_ctx_options opts{};
        opts.struct_size = sizeof opts;
        opts.backend = o.backend;
        opts.device = o.device;
        opts.key = key.data();
        opts.key_len = key.size();
        opts.capacity_bytes = o.capacity_bytes;
        opts.flags = o.flags;
        opts.max_threads = o.max_threads;
        vram_ctx *c = nullptr;
        const vram_status s = vram_ctx_new(&opts, &c);
        if (s != VRAM_OK) return detail::fail<context>(s);
        return context(c);
    }

    /// Seals a copy of `data` as shard `id`.
    result<shard> try_seal(const std::string &id, bytes data) const {
        vram_shard *out = nullptr;
        const vram_status s = vram_seal(p_, id.c_str(), data.data(), data.size(), &out);
        if (s != VRAM_OK) return detail::fail<shard>(s);
        return shard(out);
    }
    /// Seals `data` and keeps it only if its root is `expected` (else VRAM_ERR_INTEGRITY).
    result<shard> try_seal_expect(const std::string &id, bytes data, const root &expected) const {
        vram_shard *out = nullptr;
        const vram_status s =
            vram_seal_expect(p_, id.c_str(), data.data(), data.size(), expected.data(), &out);
        if (s != VRAM_OK) return detail::fail<shard>(s);
        return shard(out);
    }
    /// Seals `len` bytes of the caller's device memory in place (CUDA backend; the memory must
    /// outlive the shard).
    result<shard> try_seal_device(const std::string &id, const void *device_ptr,
                                  std::size_t len) const {
        vram_shard *out = nullptr;
        const vram_status s = vram_seal_device(p_, id.c_str(), device_ptr, len, &out);
        if (s != VRAM_OK) return detail::fail<shard>(s);
        return shard(out);
    }
    /// Re-hashes the shard where it lives. A damaged shard is a result, not an error:
    /// `intact` is false and the report locates the damage.
    result<verify_result> try_verify(const shard &sh) const {
        verify_result r;
        const vram_status s = vram_verify(p_, sh.get(), &r.report);
        if (s != VRAM_OK && s != VRAM_ERR_INTEGRITY) return detail::fail<verify_result>(s);
        r.intact = s == VRAM_OK;
        return r;
    }
    /// The byte offset of every damaged region of `sh` (empty when intact), after a fresh
    /// re-hash where the bytes live.
    result<std::vector<std::uint64_t>> try_damaged_regions(const shard &sh) const {
        using offsets = std::vector<std::uint64_t>;
        std::size_t n = 0;
        vram_status s = vram_verify_regions(p_, sh.get(), nullptr, 0, &n);
        for (int attempt = 0; attempt < 4; ++attempt) {
            if (s == VRAM_OK) return offsets{};
            if (s != VRAM_ERR_BUFFER_TOO_SMALL) return detail::fail<offsets>(s);
            offsets out(n);
            s = vram_verify_regions(p_, sh.get(), out.data(), out.size(), &n);
            if (s == VRAM_ERR_INTEGRITY) {
                out.resize(n);
                return out;
            }
        }
        return detail::fail<offsets>(s); // the damage kept growing between calls
    }
    /// Repairs `sh` in place from the sealed bytes `data` (refused, nothing written, unless
    /// they hash to the sealed root); the address never changes. See vram_shard_restore().
    result<void> try_restore(shard &sh, bytes data) const {
        const vram_status s = vram_shard_restore(p_, sh.get(), data.data(), data.size());
        return s == VRAM_OK ? result<void>() : detail::fail<void>(s);
    }
    /// Starts verifying `shards` without blocking: queued on `stream` (a cudaStream_t of this
    /// context's GPU; nullptr: libvram's own); see vram_verify_many_async().
    result<ticket> try_verify_many_async(span<const shard *const> shards,
                                         void *stream = nullptr) const {
        std::vector<const vram_shard *> raw;
        raw.reserve(shards.size());
        for (const shard *sh : shards) raw.push_back(sh ? sh->get() : nullptr);
        vram_verify_ticket *out = nullptr;
        const vram_status s = vram_verify_many_async(p_, raw.data(), raw.size(), stream, &out);
        if (s != VRAM_OK) return detail::fail<ticket>(s);
        return ticket(out);
    }
    /// Authenticates a record with no live shard and returns its fields.
    result<record_info> try_record_open(bytes record) const {
        record_info info{};
        info.struct_size = sizeof info;
        const vram_status s = vram_record_open(p_, record.data(), record.size(), &info);
        if (s != VRAM_OK) return detail::fail<record_info>(s);
        return info;
    }
    /// Checks that an authentic record describes `sh`'s bytes (VRAM_ERR_BAD_SEAL: not
    /// authentic; VRAM_ERR_INTEGRITY: authentic, other bytes).
    result<void> try_record_verify(bytes record, const shard &sh) const {
        const vram_status s = vram_record_verify(p_, record.data(), record.size(), sh.get());
        return s == VRAM_OK ? result<void>() : detail::fail<void>(s);
    }
    /// Loads and seals a safetensors checkpoint; `expected` (nullable) must match exactly.
    result<model> try_load_safetensors(const std::string &path,
                                       const manifest *expected = nullptr) const {
        vram_load_options o{};
        o.struct_size = sizeof o;
        o.flags = VRAM_MANIFEST_REGION_ROOTS;
        o.expected = expected ? expected->get() : nullptr;
        vram_model *out = nullptr;
        const vram_status s = vram_load_safetensors(p_, path.c_str(), &o, &out);
        if (s != VRAM_OK) return detail::fail<model>(s);
        return model(out);
    }
    /// The manifest of a loaded model, under this context's key.
    result<manifest> try_manifest_of(const model &m) const {
        vram_manifest *out = nullptr;
        const vram_status s = vram_model_manifest(p_, m.get(), &out);
        if (s != VRAM_OK) return detail::fail<manifest>(s);
        return manifest(out);
    }
    /// Authenticates exported manifest bytes under this context's key.
    result<manifest> try_import_manifest(bytes b) const {
        vram_manifest *out = nullptr;
        const vram_status s = vram_manifest_import(p_, b.data(), b.size(), &out);
        if (s != VRAM_OK) return detail::fail<manifest>(s);
        return manifest(out);
    }
    /// Re-hashes every tensor of a loaded model; `summary.intact == summary.tensors` when
    /// nothing is damaged (a damaged model is a result, not an error).
    result<vram_manifest_summary> try_verify_model(const model &m) const {
        vram_manifest_summary summary{};
        summary.struct_size = sizeof summary;
        const vram_status s = vram_model_verify(p_, m.get(), nullptr, &summary);
        if (s != VRAM_OK && s != VRAM_ERR_INTEGRITY)
            return detail::fail<vram_manifest_summary>(s);
        return summary;
    }
    /// A network read from an NNet file, its weights sealed in this context.
    result<network> try_network_from_nnet(const std::string &path) const {
        ::ibp_model *out = nullptr;
        const vram_status s = ibp_model_from_nnet(p_, path.c_str(), &out);
        if (s != VRAM_OK) return detail::fail<network>(s);
        return network(out);
    }
    /// A network read from an ONNX file, its weights sealed in this context.
    result<network> try_network_from_onnx(const std::string &path) const {
        ::ibp_model *out = nullptr;
        const vram_status s = ibp_model_from_onnx(p_, path.c_str(), nullptr, &out);
        if (s != VRAM_OK) return detail::fail<network>(s);
        return network(out);
    }
    /// The backend in use: VRAM_BACKEND_CUDA or VRAM_BACKEND_HOST (what AUTO chose).
    vram_backend backend() const noexcept { return static_cast<vram_backend>(vram_ctx_backend(p_)); }
    /// Bytes held by this context's shards, and its capacity.
    std::pair<std::uint64_t, std::uint64_t> usage() const noexcept {
        std::uint64_t used = 0, capacity = 0;
        vram_ctx_usage(p_, &used, &capacity);
        return {used, capacity};
    }

#if VRAM_HPP_EXCEPTIONS
    static context open(bytes key, const context_options &o = {}) {
        return value_or_throw(try_open(key, o));
    }
    shard seal(const std::string &id, bytes data) const {
        return value_or_throw(try_seal(id, data));
    }
    shard seal_expect(const std::string &id, bytes data, const root &expected) const {
        return value_or_throw(try_seal_expect(id, data, expected));
    }
    shard seal_device(const std::string &id, const void *device_ptr, std::size_t len) const {
        return value_or_throw(try_seal_device(id, device_ptr, len));
    }
    verify_result verify(const shard &sh) const { return value_or_throw(try_verify(sh)); }
    std::vector<std::uint64_t> damaged_regions(const shard &sh) const {
        return value_or_throw(try_damaged_regions(sh));
    }
    void restore(shard &sh, bytes data) const { value_or_throw(try_restore(sh, data)); }
    record_info record_open(bytes record) const { return value_or_throw(try_record_open(record)); }
    void record_verify(bytes record, const shard &sh) const {
        value_or_throw(try_record_verify(record, sh));
    }
    model load_safetensors(const std::string &path, const manifest *expected = nullptr) const {
        return value_or_throw(try_load_safetensors(path, expected));
    }
    manifest manifest_of(const model &m) const { return value_or_throw(try_manifest_of(m)); }
    manifest import_manifest(bytes b) const { return value_or_throw(try_import_manifest(b)); }
    vram_manifest_summary verify_model(const model &m) const {
        return value_or_throw(try_verify_model(m));
    }
    network network_from_nnet(const std::string &path) const {
        return value_or_throw(try_network_from_nnet(path));
    }
    network network_from_onnx(const std::string &path) const {
        return value_or_throw(try_network_from_onnx(path));
    }
#endif
};

/// Damage a scrubber's seal check confirmed (see vram_damage_callback): `shard` is valid only
/// during the callback (pass it to context::try_restore through a vram::shard you hold, or to
/// the C API directly).
struct damage {
    const vram_shard *shard;
    std::string shard_id;
    std::vector<std::uint64_t> region_offsets;
};

/// How hard a scrubber may work (see vram_scrubber_options).
struct scrubber_options {
    std::uint32_t max_sms = 0;     ///< CUDA: SMs of the persistent grid (0 = 2).
    std::uint32_t max_threads = 0; ///< Host backend: threads (0 = 1).
    std::uint64_t max_bytes_per_second = 0; ///< 0 = no rate cap.
    std::uint64_t pass_period_ns = 0;       ///< A pass starts at most this often (0 = back to back).
    bool start_paused = false;
    /// Called on the scrubber's thread; exceptions it throws are swallowed (they must not
    /// reach libvram's thread).
    std::function<void(const damage &)> on_damage;
};

/// A background scrubber (C: vram_scrubber): sweeps its shards until destroyed, which stops
/// and joins it before its callback goes.
class scrubber {
  public:
    scrubber() noexcept = default;

    /// Starts scrubbing `shards` of `ctx` (each verified first; a damaged one is refused).
    static result<scrubber> try_start(const context &ctx, span<const shard *const> shards,
                                      scrubber_options o = {}) {
        scrubber out;
        out.state_ = std::make_unique<state>();
        out.state_->on_damage = std::move(o.on_damage);
        vram_scrubber_options opts{};
        opts.struct_size = sizeof opts;
        opts.max_sms = o.max_sms;
        opts.max_threads = o.max_threads;
        opts.max_bytes_per_second = o.max_bytes_per_second;
        opts.pass_period_ns = o.pass_period_ns;
        opts.flags = o.start_paused ? VRAM_SCRUB_START_PAUSED : 0u;
        if (out.state_->on_damage) {
            opts.on_damage = &scrubber::trampoline;
            opts.userdata = out.state_.get();
        }
        std::vector<const vram_shard *> raw;
        raw.reserve(shards.size());
        for (const shard *sh : shards) raw.push_back(sh ? sh->get() : nullptr);
        vram_scrubber *p = nullptr;
        const vram_status s = vram_scrubber_new(ctx.get(), raw.data(), raw.size(), &opts, &p);
        if (s != VRAM_OK) return detail::fail<scrubber>(s);
        out.h_ = detail::handle<vram_scrubber, vram_scrubber_free>(p);
        return out;
    }
    result<void> try_add(const shard &sh) const { return done(vram_scrubber_add(h_.get(), sh.get())); }
    result<void> try_remove(const shard &sh) const {
        return done(vram_scrubber_remove(h_.get(), sh.get()));
    }
    /// Returns once none of the scrubber's work is on the device.
    result<void> try_pause() const { return done(vram_scrubber_pause(h_.get())); }
    result<void> try_resume() const { return done(vram_scrubber_resume(h_.get())); }
    result<vram_scrub_stats> try_stats() const {
        vram_scrub_stats st{};
        st.struct_size = sizeof st;
        const vram_status s = vram_scrubber_stats(h_.get(), &st);
        if (s != VRAM_OK) return detail::fail<vram_scrub_stats>(s);
        return st;
    }
#if VRAM_HPP_EXCEPTIONS
    static scrubber start(const context &ctx, span<const shard *const> shards,
                          scrubber_options o = {}) {
        return value_or_throw(try_start(ctx, shards, std::move(o)));
    }
    void add(const shard &sh) const { value_or_throw(try_add(sh)); }
    void remove(const shard &sh) const { value_or_throw(try_remove(sh)); }
    void pause() const { value_or_throw(try_pause()); }
    void resume() const { value_or_throw(try_resume()); }
    vram_scrub_stats stats() const { return value_or_throw(try_stats()); }
#endif
    vram_scrubber *get() const noexcept { return h_.get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

  private:
    struct state {
        std::function<void(const damage &)> on_damage;
    };
    static result<void> done(vram_status s) {
        return s == VRAM_OK ? result<void>() : detail::fail<void>(s);
    }
    static void trampoline(void *userdata, const vram_shard *sh, const char *id,
                           const std::uint64_t *offsets, std::size_t n) {
        auto *st = static_cast<state *>(userdata);
#if VRAM_HPP_EXCEPTIONS
        try {
            st->on_damage(damage{sh, id, std::vector<std::uint64_t>(offsets, offsets + n)});
        } catch (...) {
        }
#else
        st->on_damage(damage{sh, id, std::vector<std::uint64_t>(offsets, offsets + n)});
#endif
    }
    // Declared before the handle, so destroyed after it: the scrubber is stopped and joined
    // before the callback it calls goes away.
    std::unique_ptr<state> state_;
    detail::handle<vram_scrubber, vram_scrubber_free> h_;
};

inline result<builder> builder::try_create(const context &ctx, const std::string &name,
                                           span<const std::uint64_t> input_shape) {
    ::ibp_builder *b = nullptr;
    const vram_status s =
        ibp_builder_new(ctx.get(), name.c_str(), input_shape.data(), input_shape.size(), &b);
    if (s != VRAM_OK) return detail::fail<builder>(s);
    builder out(b);
    std::uint64_t n = 1;
    for (std::uint64_t d : input_shape) n *= d;
    out.sizes_.assign(1, n);
    return out;
}

inline result<network> builder::try_build() {
    ::ibp_model *m = nullptr;
    // ibp_builder_build consumes the builder whatever it returns.
    const vram_status s = ibp_builder_build(release(), &m);
    if (s != VRAM_OK) return detail::fail<network>(s);
    return network(m);
}

#if VRAM_HPP_EXCEPTIONS
inline network builder::build() { return value_or_throw(try_build()); }
#endif

/// A log function: (level, target, message); level 1 = error … 5 = trace.
using log_function = std::function<void(std::uint32_t, const char *, const char *)>;

namespace detail {
struct log_state {
    std::mutex lock;
    std::unique_ptr<log_function> current;
};
inline log_state &log() {
    static log_state s;
    return s;
}
inline void log_trampoline(void *userdata, std::uint32_t level, const char *target,
                           const char *message) {
    auto *f = static_cast<log_function *>(userdata);
    // An exception must not cross the C boundary: a throwing log function is cut off here.
#if VRAM_HPP_EXCEPTIONS
    try {
        (*f)(level, target, message);
    } catch (...) {
    }
#else
    (*f)(level, target, message);
#endif
}
} // namespace detail

/// Sends libvram's events up to `max_level` to `f` (any callable taking (level, target,
/// message)); an empty `f` stops them. Replaces the previous function, which is destroyed once
/// libvram no longer runs it. Must not be called from inside the log function itself.
template <class F> void set_log_callback(F &&f, std::uint32_t max_level = 3) {
    auto &state = detail::log();
    std::lock_guard<std::mutex> guard(state.lock);
    std::unique_ptr<log_function> next;
    log_function fn(std::forward<F>(f));
    if (fn) next = std::make_unique<log_function>(std::move(fn));
    if (next)
        vram_set_log_callback(&detail::log_trampoline, next.get(), max_level);
    else
        vram_set_log_callback(nullptr, nullptr, 0);
    // vram_set_log_callback returns once no call of the old function is running.
    state.current = std::move(next);
}

/// The library's version string.
inline const char *version() noexcept { return vram_version(); }

/// What this libvram was built with and what it finds now (vram_build_info()).
inline vram_build_details build_info() noexcept {
    vram_build_details info{};
    info.struct_size = sizeof info;
    vram_build_info(&info);
    return info;
}

} // namespace vram

#endif // VRAM_HPP
