//! The checked-in include/vram.h is exactly what cbindgen generates from the sources, and it
//! exports only vram_/ibp_ names. `VRAM_BLESS=1 cargo test --test header_current` rewrites it.

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/vram.h"));
const CHECKED_IN: &str = include_str!("../include/vram.h");

#[test]
fn header_is_current() {
    if std::env::var_os("VRAM_BLESS").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/include/vram.h"),
            GENERATED,
        )
        .unwrap();
        return;
    }
    assert!(
        GENERATED == CHECKED_IN,
        "include/vram.h is stale: run `VRAM_BLESS=1 cargo test --test header_current` and commit it"
    );
}

#[test]
fn header_names_are_prefixed() {
    for line in CHECKED_IN.lines() {
        let name = if let Some(rest) = line.strip_prefix("#define ") {
            rest.split_whitespace().next()
        } else if let Some(rest) = line.strip_prefix("typedef struct ") {
            rest.split_whitespace().next()
        } else if line.starts_with("enum ") {
            line.split_whitespace().nth(1)
        } else {
            None
        };
        if let Some(n) = name {
            assert!(
                ["VRAM_", "vram_", "IBP_", "ibp_"]
                    .iter()
                    .any(|p| n.starts_with(p)),
                "unprefixed name in vram.h: {n}"
            );
        }
    }
}
