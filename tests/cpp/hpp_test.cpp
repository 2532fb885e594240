// vram.hpp: every wrapper against the C ABI underneath — RAII (moves, frees), errors as
// exceptions and as results, two-call size queries, records, manifests, a safetensors model,
// certified bounds through spans, and the log callback adapter.
#include <vram.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>
#include <thread>
#include <chrono>
#include <mutex>

static int failures = 0;
#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
            ++failures;                                                                      \
        }                                                                                    \
    } while (0)

template <class F> static vram_status status_of(F f) {
    try {
        f();
    } catch (const vram::error &e) {
        CHECK(std::strlen(e.what()) > 0);
        return e.status();
    }
    return VRAM_OK;
}

static void write_file(const std::string &path, const std::string &bytes) {
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

int main() {
    const std::string key = "an example seal secret, 32 bytes";
    const std::string other = "another seal secret of 32 bytes!";
    vram::context_options opts;
    opts.flags = VRAM_CTX_ALLOW_FAULT_DRILLS;

    // Errors: thrown with the status and the message, or returned by the try_ forms.
    CHECK(status_of([&] { vram::context::open(vram::as_bytes(std::string("short")), opts); }) ==
          VRAM_ERR_INVALID_ARGUMENT);
    auto bad = vram::context::try_open(vram::as_bytes(std::string("short")));
    CHECK(!bad && bad.status() == VRAM_ERR_INVALID_ARGUMENT && !bad.message().empty());
    CHECK(bad.error().category().name() == std::string("vram"));

    int events = 0;
    vram::set_log_callback([&](std::uint32_t, const char *target, const char *) {
        if (std::strncmp(target, "vram.", 5) == 0) ++events;
    }, 4);

    auto ctx = vram::context::open(vram::as_bytes(key), opts);
    CHECK(ctx.backend() == (vram::build_info().gpu_count > 0 ? VRAM_BACKEND_CUDA : VRAM_BACKEND_HOST));
    {
        std::vector<std::uint32_t> data(300000);
        for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint32_t>(i * 2654435761u);
        auto s = ctx.seal("t.weight", vram::as_bytes(data));
        CHECK(s.size() == data.size() * 4);
        CHECK(ctx.usage().first > 0);
        // Moves keep exactly one owner.
        vram::shard moved = std::move(s);
        CHECK(!s && moved);
        CHECK(ctx.verify(moved).intact);

        // Records: exported (size query hidden), opened with no shard, checked against bytes.
        auto rec = moved.record();
        auto info = ctx.record_open(rec);
        CHECK(std::string(info.shard_id) == "t.weight" && info.byte_len == data.size() * 4);
        ctx.record_verify(rec, moved);
        auto again = ctx.seal_expect("t.copy", vram::as_bytes(data), moved.merkle_root());
        CHECK(status_of([&] { ctx.record_verify(rec, again); }) == VRAM_ERR_INTEGRITY);
        auto rec2 = rec;
        rec2[rec2.size() / 2] ^= 1;
        CHECK(status_of([&] { ctx.record_open(rec2); }) == VRAM_ERR_BAD_SEAL);
        auto foreign = vram::context::open(vram::as_bytes(other));
        CHECK(status_of([&] { foreign.record_open(rec); }) == VRAM_ERR_BAD_SEAL);
        // Sealing against another root keeps nothing.
        vram::root wrong{};
        auto refused = ctx.try_seal_expect("t.wrong", vram::as_bytes(data), wrong);
        CHECK(!refused && refused.status() == VRAM_ERR_INTEGRITY);
        CHECK(status_of([&] { ctx.seal("t.weight", vram::as_bytes(data)); }) ==
              VRAM_ERR_INVALID_ARGUMENT); // the id is live

        // A flipped bit is a result (not an error) that locates the damage.
        CHECK(moved.try_debug_flip_bit(8ull * 1'100'000).ok());
        auto v = ctx.verify(moved);
        CHECK(!v.intact && v.report.first_damaged_offset == (1u << 20));
        CHECK(moved.try_debug_flip_bit(8ull * 100).ok());
        CHECK((ctx.damaged_regions(moved) == std::vector<std::uint64_t>{0, 1u << 20}));
        auto wrong_bytes = data;
        wrong_bytes[0] ^= 1;
        CHECK(status_of([&] { ctx.restore(moved, vram::as_bytes(wrong_bytes)); }) ==
              VRAM_ERR_INTEGRITY);
        // Non-blocking verify: a ticket, polled and waited for.
        const vram::shard *both[] = {&moved, &again};
        auto t = ctx.try_verify_many_async(both);
        CHECK(t.ok());
        auto reports = t.value().try_wait(2);
        CHECK(reports.ok() && reports.value()[0].status == VRAM_ERR_INTEGRITY &&
              reports.value()[1].status == VRAM_OK);
        CHECK(t.value().try_done().ok() && t.value().try_done().value());
        const void *before = moved.data();
        ctx.restore(moved, vram::as_bytes(data));
        CHECK(ctx.verify(moved).intact && moved.data() == before);
        CHECK(ctx.damaged_regions(again).empty());

        // A scrubber: damage reaches the callback (on the scrubber's thread), restore clears it.
        std::mutex m;
        std::vector<vram::damage> seen;
        vram::scrubber_options so;
        so.on_damage = [&](const vram::damage &d) {
            std::lock_guard<std::mutex> g(m);
            seen.push_back(d);
        };
        auto sc = vram::scrubber::start(ctx, both, so);
        CHECK(status_of([&] { sc.add(moved); }) == VRAM_ERR_INVALID_ARGUMENT);
        CHECK(moved.try_debug_flip_bit(8ull * 1'100'000 + 3).ok());
        for (int i = 0; i < 3000; ++i) {
            {
                std::lock_guard<std::mutex> g(m);
                if (!seen.empty()) break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        {
            std::lock_guard<std::mutex> g(m);
            CHECK(seen.size() == 1 && seen[0].shard_id == "t.weight" &&
                  seen[0].region_offsets == std::vector<std::uint64_t>{1u << 20});
        }
        ctx.restore(moved, vram::as_bytes(data));
        sc.pause();
        CHECK(sc.stats().paused == 1 && sc.stats().damage_reports == 1 && sc.stats().shards == 2);
        sc.resume();
        sc.remove(again);
        CHECK(sc.stats().shards == 1);
    }
    auto [used, cap] = ctx.usage();
    CHECK(used == 0);
    (void)cap;

    // A safetensors file: loaded, its manifest exported, imported, its tensors read back.
    const std::string dir = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
    const std::string path = dir + "/vram_hpp_test.safetensors";
    const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}})";
    std::string file(8, '\0');
    for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    file += header + std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    write_file(path, file);
    {
        auto m = ctx.load_safetensors(path);
        CHECK(m.tensor_count() == 2);
        auto a = m.tensor(0);
        CHECK(a.name == "a" && a.dtype == "F32" && a.shape == std::vector<std::uint64_t>{2} && a.shard);
        CHECK(m.tensor(1).shard == nullptr && m.tensor(1).byte_len == 0);
        CHECK(!m.try_tensor(2) && m.try_tensor(2).status() == VRAM_ERR_INVALID_ARGUMENT);
        auto man = ctx.manifest_of(m);
        auto bytes = man.export_bytes();
        auto imported = ctx.import_manifest(bytes);
        CHECK(imported.tensor_count() == 2 && imported.tensor(0).name == "a");
        CHECK(imported.model_name() == "vram_hpp_test");
        auto summary = ctx.verify_model(m);
        CHECK(summary.tensors == 2 && summary.intact == 2);
        bytes[10] ^= 1;
        CHECK(status_of([&] { ctx.import_manifest(bytes); }) == VRAM_ERR_BAD_SEAL);
    }
    write_file(path, file.substr(0, file.size() - 1)); // truncated
    CHECK(status_of([&] { ctx.load_safetensors(path); }) == VRAM_ERR_INVALID_ARGUMENT);
    std::remove(path.c_str());

    // Certified bounds through spans: a 2-input, 1-output NNet network; short spans refused.
    const std::string nnet = dir + "/vram_hpp_test.nnet";
    write_file(nnet, "1,2,1,2,\n2,1,\n0,\n-10,-10,\n10,10,\n0,0,0,\n1,1,1,\n1,-1,\n0.5,\n");
    {
        auto net = ctx.network_from_nnet(nnet);
        CHECK(net.input_size() == 2 && net.output_size() == 1);
        std::vector<float> lo{0.0f, 0.0f}, hi{1.0f, 2.0f}, olo(1), ohi(1);
        net.propagate(1, lo, hi, olo, ohi);
        CHECK(olo[0] <= -1.5f && ohi[0] >= -0.5f); // x - y + 0.5 over the box: [-1.5, 1.5]
        std::vector<float> short_out(0);
        auto r = net.try_propagate(1, lo, hi, short_out, ohi);
        CHECK(!r && r.status() == VRAM_ERR_INVALID_ARGUMENT);
    }
    std::remove(nnet.c_str());

    // A network built layer by layer: weights sealed as added, a wrong weight length refused
    // before libvram reads it, bounds through the built network.
    {
        const std::vector<std::uint64_t> shape{3};
        auto b = vram::builder::create(ctx, "net", shape);
        std::vector<float> w1(4 * 3, 0.5f), b1(4, 0.0f), w2(4, 1.0f), b2(1, -1.0f);
        auto short_w = std::vector<float>(5);
        auto bad_len = b.try_linear(0, 4, short_w, b1);
        CHECK(!bad_len && bad_len.status() == VRAM_ERR_INVALID_ARGUMENT);
        auto h = b.linear(0, 4, w1, b1);
        auto r = b.relu(h);
        b.linear(r, 1, w2, b2);
        auto net = b.build();
        CHECK(!b); // consumed
        std::vector<float> lo{1, 1, 1}, hi{1, 1, 1}, olo(1), ohi(1);
        net.propagate(1, lo, hi, olo, ohi);
        if (!(olo[0] <= 5.0f && ohi[0] >= 5.0f)) std::fprintf(stderr, "bounds [%g, %g]\n", olo[0], ohi[0]);
        CHECK(olo[0] <= 5.0f && ohi[0] >= 5.0f); // 4 x relu(1.5) - 1 = 5
    }

    // A verdict from a VNN-LIB property: y = relu(x0 - x1) + relu(x0 + x1) on [0, 1]^2 never
    // drops below 0 (holds), and reaches 1.9 (violated, with a counterexample in the box).
    {
        vram::context_options host;
        host.backend = VRAM_BACKEND_HOST;
        auto hctx = vram::context::open(vram::as_bytes(key), host);
        const std::vector<std::uint64_t> shape{2};
        auto b = vram::builder::create(hctx, "vee", shape);
        std::vector<float> w1{1, -1, 1, 1}, b1{0, 0}, w2{1, 1}, b2{0};
        b.linear(b.relu(b.linear(0, 2, w1, b1)), 1, w2, b2);
        auto net = b.build();
        const std::string box = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
                                "(declare-const Y_0 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
                                "(assert (>= X_1 0))\n(assert (<= X_1 1))\n";
        const std::string prop = dir + "/vram_hpp_test.vnnlib";
        write_file(prop, box + "(assert (<= Y_0 -0.001))\n");
        auto holds = net.certify(vram::spec::from_vnnlib(prop), 30.0);
        CHECK(holds.holds() && holds.proven_fraction == 1.0 && holds.counterexample.empty());
        write_file(prop, box + "(assert (>= Y_0 1.9))\n");
        auto s = vram::spec::from_vnnlib(prop);
        CHECK(s.input_count() == 2 && s.output_count() == 1 && s.case_count() == 1);
        auto v = net.certify(s, 30.0);
        CHECK(v.violated() && v.counterexample.size() == 2 && v.out_lower[0] >= 1.9 - 1e-9);
        CHECK(v.weights_root == holds.weights_root);
        write_file(prop, "(declare-const X_0 Real)\n(assert (<= X_0 (* X_0 X_0)))\n");
        auto bad = vram::spec::try_from_vnnlib(prop);
        CHECK(!bad && bad.status() == VRAM_ERR_INVALID_ARGUMENT);
        std::remove(prop.c_str());
    }

    CHECK(events > 0);
    const auto build = vram::build_info();
    CHECK(std::string(build.version) == vram::version());
    CHECK((build.gpu_count == 0) == (build.no_gpu_reason[0] != '\0'));
    vram::set_log_callback(vram::log_function{});
    std::printf("vram.hpp test: %s\n", failures == 0 ? "all checks passed" : "FAILED");
    return failures == 0 ? 0 : 1;
}
