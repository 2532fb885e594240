//! Build script: generates the C header with cbindgen, sets the soname, and (when enabled)
//! compiles the CUDA kernels.

use std::env;
use std::path::PathBuf;

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
         #define VRAM_VERSION_PATCH {patch}\n\
         /** The previous node, as the `input` argument of every ibp_builder_add_* function. */\n\
         #define IBP_PREV UINT32_MAX\n"
    ));
    match cbindgen::generate_with_config(&crate_dir, config) {
        Ok(bindings) => {
            bindings.write_to_file(out_dir.join("vram.h"));
        }
        Err(e) => panic!("cbindgen could not generate vram.h: {e}"),
    }
}
