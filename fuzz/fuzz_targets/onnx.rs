//! ONNX bytes → model: any input may be refused, none may panic, abort or leave shards sealed.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ctx = common::ctx();
    let model = vram::ibp::onnx::parse(ctx.clone(), data, "fuzz");
    drop(model);
    assert_eq!(
        ctx.used_bytes(),
        0,
        "a refused or freed model left shards sealed"
    );
});
