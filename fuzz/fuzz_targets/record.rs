//! Seal records: arbitrary bytes never authenticate against a live shard (only its own
//! record does), and nothing panics.
#![no_main]

mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vram::shard::Shard;

fn shard() -> &'static Shard {
    static SHARD: OnceLock<Shard> = OnceLock::new();
    SHARD.get_or_init(|| {
        common::ctx()
            .seal(b"model.layers.0.weight", &[7u8; 70_000], None)
            .expect("seal")
    })
}

fuzz_target!(|data: &[u8]| {
    let ctx = common::ctx();
    let s = shard();
    let ok = ctx.record_verify(data, s).is_ok();
    assert_eq!(
        ok,
        data == s.encoded_record(),
        "a record other than the shard's authenticated"
    );
});
