//! Build script: generates the C header with cbindgen, sets the soname, and compiles the
//! CUDA kernels (VRAM_CUDA=auto|on|off).

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");

    let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_default();
    let minor = env::var("CARGO_PKG_VERSION_MINOR").unwrap_or_default();
    let patch = env::var("CARGO_PKG_VERSION_PATCH").unwrap_or_default();

    // While the library is 0.x every minor release may break the ABI, so the soname carries it.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvram.so.{major}.{minor}");

    generate_header(&major, &minor, &patch);
    // vram_build_info() reports the architectures compiled ("" without CUDA).
    let archs = build_cuda().unwrap_or_default();
    println!("cargo:rustc-env=VRAM_CUDA_ARCHITECTURES={archs}");
}

/// `VRAM_CUDA=on|auto|off` (default on): compile cuda/*.cu with nvcc and link the CUDA
/// runtime statically, so one libvram.so serves GPU and CPU-only hosts alike. The default fails
/// loudly without nvcc rather than quietly building a host-only library; `auto` builds CUDA
/// when nvcc is found, `off` never does.
fn build_cuda() -> Option<String> {
    println!("cargo:rustc-check-cfg=cfg(vram_cuda)");
    println!("cargo:rerun-if-env-changed=VRAM_CUDA");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-changed=cuda");
    let mode = env::var("VRAM_CUDA").unwrap_or_else(|_| "on".into());
    let nvcc = match mode.as_str() {
        "off" => return None,
        "auto" | "on" => find_nvcc(),
        other => panic!("VRAM_CUDA={other}: expected auto, on or off"),
    };
    let Some(nvcc) = nvcc else {
        if mode == "on" {
            panic!(
                "libvram builds its CUDA backend by default, but nvcc was not found (looked at \
                 NVCC, .tools/cuda, PATH and /usr/local/cuda). Run scripts/test.sh or \
                 scripts/demo.sh once (they install nvcc 13.0 into .tools/cuda), set NVCC, or \
                 build without the GPU backend: VRAM_CUDA=off (or VRAM_CUDA=auto: CUDA when \
                 nvcc is found)"
            );
        }
        println!("cargo:warning=nvcc not found: building libvram without the CUDA backend");
        return None;
    };
    // The PyPI layout keeps include/ and lib/ beside bin/ (nvidia/cu13/{bin,include,lib});
    // the classic toolkit keeps lib64/.
    let root = nvcc
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // cc finds nvcc through the NVCC variable (its family detection reads the process
    // environment, not Build::env).
    // SAFETY: build scripts run single-threaded here; nothing else reads the environment.
    unsafe { env::set_var("NVCC", &nvcc) };
    let mut build = cc::Build::new();
    build
        .cuda(true)
        // The kernels and cudart_static need no C++ standard library at run time.
        .cpp_link_stdlib(None)
        .include("cuda")
        .flag("-O3")
        .flag("-std=c++17")
        // Static-local guards would pull in libstdc++ (__cxa_guard_*); the launchers need none.
        .flag("-Xcompiler=-fno-threadsafe-statics")
        // Sound and exact code only: no fast-math, no flush-to-zero, IEEE division/sqrt.
        .flag("-ftz=false")
        .flag("-prec-div=true")
        .flag("-prec-sqrt=true")
        .flag("-fmad=true");
    // VRAM_CUDA_LINEINFO=1: line tables in the kernels (the code is unchanged), so that Nsight
    // Compute attributes stalls to source lines; off by default, as libvram.so grows from 9.7
    // to 23 MB with them.
    println!("cargo:rerun-if-env-changed=VRAM_CUDA_LINEINFO");
    if env::var("VRAM_CUDA_LINEINFO").is_ok_and(|v| v == "1") {
        build.flag("-lineinfo");
    }
    const ARCHS: [&str; 4] = ["80", "86", "89", "90"];
    for sm in ARCHS {
        build.flag(format!("-gencode=arch=compute_{sm},code=sm_{sm}"));
    }
    let archs: Vec<String> = ARCHS.iter().map(|a| format!("sm_{a}")).collect();
    // PTX for the newest architecture, so newer GPUs can JIT it.
    build.flag("-gencode=arch=compute_90,code=compute_90");
    let mut sources: Vec<PathBuf> = std::fs::read_dir("cuda")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    sources.retain(|p| p.extension().is_some_and(|e| e == "cu"));
    sources.sort();
    // Each file is compiled on its own, then all are archived together. cc compiles a build of
    // several .cu files as relocatable device code (--device-c), whose kernels the compiler
    // cannot optimise as a whole program, and several kernels sit at their register caps:
    // built that way, the linear-bounds kernel's guarded instance spilled 84 bytes a thread and
    // its weights, read through L1, missed more (Nsight Compute on an H200: hit rate 94.5 %
    // instead of 99.7 %, 3.76 ms against 3.45), and the scrubber spilled 116 bytes instead of
    // 24. No kernel calls device code in another file (host launchers do call each other: one
    // archive keeps the link order out of it).
    let mut objects = Vec::new();
    for src in &sources {
        objects.extend(build.clone().file(src).compile_intermediates());
    }
    build.objects(&objects).compile("vram_cuda");
    for lib in ["lib", "lib64", "targets/x86_64-linux/lib"] {
        let dir = root.join(lib);
        if dir.join("libcudart_static.a").exists() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
    }
    println!("cargo:rustc-link-lib=static=cudart_static");
    for lib in ["rt", "dl", "pthread"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    println!("cargo:rustc-cfg=vram_cuda");
    Some(format!("{},compute_90", archs.join(",")))
}

fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC").map(PathBuf::from) {
        return p.exists().then_some(p);
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let tools_lib = manifest.join(".tools/cuda/lib");
    if let Ok(entries) = std::fs::read_dir(&tools_lib) {
        for e in entries.flatten() {
            let nvcc = e.path().join("site-packages/nvidia/cu13/bin/nvcc");
            if nvcc.exists() {
                return Some(nvcc);
            }
        }
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|d| d.join("nvcc"))
        .chain([PathBuf::from("/usr/local/cuda/bin/nvcc")])
        .find(|p| p.exists())
}

/// Writes `$OUT_DIR/vram.h`; the `header_current` test compares it with `include/vram.h`.
fn generate_header(major: &str, minor: &str, patch: &str) {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap_or_default());
    let mut config = match cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => panic!("cbindgen.toml: {e}"),
    };
    config.after_includes = Some(format!(
        "\n#define VRAM_VERSION_MAJOR {major}\n#define VRAM_VERSION_MINOR {minor}\n\
         #define VRAM_VERSION_PATCH {patch}\n"
    ));
    match cbindgen::generate_with_config(&crate_dir, config) {
        Ok(bindings) => {
            bindings.write_to_file(out_dir.join("vram.h"));
        }
        Err(e) => panic!("cbindgen could not generate vram.h: {e}"),
    }
}
