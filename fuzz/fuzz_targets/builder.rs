//! Builder parameters from fuzz bytes: every call returns a value (never panics), a failed add
//! leaves usage unchanged, and an accepted network propagates a small batch with ordered
//! bounds.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use vram::ibp::graph::{Conv2d, Op, Pool2d};
use vram::ibp::{Builder, Request};

fuzz_target!(|data: &[u8]| {
    let mut words = data
        .chunks(8)
        .map(|c| c.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)));
    let mut next = move || words.next().unwrap_or(1);
    let ctx = common::ctx();
    let shape = [1 + next() % 4, 1 + next() % 12, 1 + next() % 12];
    let Ok(mut b) = Builder::new(ctx.clone(), b"fuzz", &shape) else {
        return;
    };
    let weights = vec![0.25f32; 1 << 16];
    for _ in 0..next() % 6 {
        let used = ctx.used_bytes();
        let input = (next() % 4) as u32;
        let r = match next() % 5 {
            0 => {
                let conv = Conv2d {
                    cin: 0,
                    cout: next(),
                    kh: next(),
                    kw: next(),
                    stride: [next(), next()],
                    padding: [next(), next()],
                    dilation: [next(), next()],
                    groups: next().max(1),
                };
                match b.conv2d_weight_len(input, conv) {
                    Ok(n) if n as usize <= weights.len() => {
                        b.add_conv2d(input, conv, &weights[..n as usize], None)
                    }
                    Ok(_) => continue,
                    Err(e) => Err(e),
                }
            }
            1 => {
                let out = next();
                match b.linear_weight_len(input, out) {
                    Ok(n) if n as usize <= weights.len() => {
                        b.add_linear(input, out, &weights[..n as usize], None)
                    }
                    Ok(_) => continue,
                    Err(e) => Err(e),
                }
            }
            2 => {
                let pool = Pool2d {
                    kernel: [next(), next()],
                    stride: [next(), next()],
                    padding: [next(), next()],
                };
                b.add_pool2d(input, pool, next() % 2 == 0)
            }
            3 => b.add_elementwise(input, Op::Relu),
            _ => b.add_add(input, (next() % 4) as u32),
        };
        if r.is_err() {
            assert_eq!(ctx.used_bytes(), used, "a failed add changed usage");
        }
    }
    let Ok(model) = b.build() else {
        return;
    };
    let (n_in, n_out) = (model.input_size(), model.output_size());
    if n_in > 4096 || n_out > 1 << 16 {
        return;
    }
    let lo = vec![-1.0f32; 2 * n_in];
    let hi = vec![1.0f32; 2 * n_in];
    let (mut ol, mut oh) = (vec![0f32; 2 * n_out], vec![0f32; 2 * n_out]);
    let req = Request {
        batch: 2,
        in_lo: &lo,
        in_hi: &hi,
        spec: None,
    };
    model
        .propagate_host(&req, &mut ol, &mut oh)
        .expect("propagation of an accepted network");
    assert!(ol.iter().zip(&oh).all(|(l, h)| l <= h));
});
