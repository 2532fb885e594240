//! NNet text → model: any input may be refused, none may panic, abort or leave shards sealed.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = common::ctx();
    let model = vram::ibp::nnet::parse(ctx.clone(), text, std::path::Path::new("fuzz.nnet"));
    drop(model);
    assert_eq!(
        ctx.used_bytes(),
        0,
        "a refused or freed model left shards sealed"
    );
});
