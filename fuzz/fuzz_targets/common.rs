//! A host-backend context shared by the targets (fault drills off, no capacity cap).

use std::sync::{Arc, OnceLock};

use vram::backend::BackendChoice;
use vram::context::{Context, ContextOptions};

pub fn ctx() -> Arc<Context> {
    static CTX: OnceLock<Arc<Context>> = OnceLock::new();
    Arc::clone(CTX.get_or_init(|| {
        let opts = ContextOptions {
            backend: BackendChoice::Host,
            device: 0,
            secret: b"fuzzing secret of thirty-two byte",
            capacity_bytes: 1 << 30,
            allow_fault_drills: false,
            max_threads: 0,
        };
        Arc::new(Context::new(&opts).expect("host context"))
    }))
}
