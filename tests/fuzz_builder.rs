//! Seeded fuzzing of the builder's parameters through the C ABI: every parameter at and beyond
//! every limit (0, 1, 2, 2^31, 2^32, 2^63, u64::MAX, the limits ± 1, small values). Every
//! call must return VRAM_OK, VRAM_ERR_INVALID_ARGUMENT, VRAM_ERR_NULL_ARGUMENT or
//! VRAM_ERR_OUT_OF_MEMORY — never a panic — and a failed call must leave the builder and the
//! context's usage unchanged. Accepted networks are propagated (batch 2) and their bounds must
//! be ordered, which checks that propagation meets no shape it cannot compute.
//!
//! Also seeded mutation of seal records: no altered record authenticates.
//!
//! `VRAM_FUZZ_BUILDER` sets the number of builder cases (default 100 000) and
//! `VRAM_FUZZ_RECORDS` the number of record mutations (default 100 000).

mod common;

use std::ptr;

use common::*;
use vram::*;

/// A parameter value: edge cases half of the time, small values otherwise.
fn param(rng: &mut Rng) -> u64 {
    const EDGES: [u64; 16] = [
        0,
        1,
        2,
        3,
        1 << 31,
        1 << 32,
        1 << 63,
        u64::MAX,
        4095,
        4096,
        4097,
        (1 << 28) - 1,
        1 << 28,
        (1 << 28) + 1,
        u32::MAX as u64,
        u64::MAX - 1,
    ];
    if rng.below(2) == 0 {
        EDGES[rng.index(EDGES.len())]
    } else {
        rng.below(6)
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const ALLOWED: [vram_status; 4] = [
    vram_status::VRAM_OK,
    vram_status::VRAM_ERR_INVALID_ARGUMENT,
    vram_status::VRAM_ERR_NULL_ARGUMENT,
    vram_status::VRAM_ERR_OUT_OF_MEMORY,
];

/// Weight length a conv or linear layer would need, when small enough to supply.
fn supplied(len: Option<u64>) -> Option<usize> {
    len.filter(|&n| n > 0 && n <= 1 << 16).map(|n| n as usize)
}

#[test]
fn builder_parameters_at_and_beyond_every_limit() {
    let cases = env_count("VRAM_FUZZ_BUILDER", 100_000);
    let ctx = Ctx::new();
    let mut rng = Rng(0xb111_de12);
    let weights = vec![0.125f32; 1 << 16];
    let (mut accepted, mut refused, mut propagated) = (0usize, 0usize, 0usize);
    let mut case = 0usize;
    while case < cases {
        // A fresh network: a [C, H, W] or a flat input of small random size.
        let shape: Vec<u64> = if rng.below(3) == 0 {
            vec![1 + rng.below(16)]
        } else {
            vec![1 + rng.below(3), 1 + rng.below(9), 1 + rng.below(9)]
        };
        let mut b = ptr::null_mut();
        assert_eq!(
            ibp_builder_new(ctx.0, c"fuzz".as_ptr(), shape.as_ptr(), shape.len(), &mut b),
            vram_status::VRAM_OK
        );
        let mut nodes = 1u32;
        for _ in 0..1 + rng.below(4) {
            case += 1;
            let used = ctx.used();
            let input = match rng.below(8) {
                0 => IBP_PREV,
                1 => param(&mut rng) as u32,
                _ => rng.below(nodes as u64) as u32,
            };
            let mut node = u32::MAX - 7;
            // Only the input node's shape is known here: weights are supplied only for layers
            // fed by it. Other layers get NULL weights, which the library must refuse (after
            // its parameter checks) without reading anything.
            let fed_by_input = input == 0 || (input == IBP_PREV && nodes == 1);
            let s = match rng.below(6) {
                0 | 1 => {
                    let p = ibp_conv2d_params {
                        struct_size: size_of::<ibp_conv2d_params>() as u32,
                        out_channels: param(&mut rng),
                        kernel_h: param(&mut rng),
                        kernel_w: param(&mut rng),
                        stride_h: param(&mut rng),
                        stride_w: param(&mut rng),
                        pad_h: param(&mut rng),
                        pad_w: param(&mut rng),
                        dilation_h: param(&mut rng),
                        dilation_w: param(&mut rng),
                        groups: param(&mut rng),
                    };
                    let cin = shape.first().copied().unwrap_or(1);
                    let need = [p.out_channels, cin, p.kernel_h, p.kernel_w]
                        .iter()
                        .try_fold(1u64, |a, &d| a.checked_mul(d));
                    // A weight buffer of the needed length when it is small; otherwise NULL,
                    // which the library must refuse before reading (it never reads past).
                    let w = match supplied(need) {
                        Some(_) if fed_by_input => weights.as_ptr(),
                        _ => ptr::null(),
                    };
                    let bias = if !w.is_null() && p.out_channels <= 1 << 16 && rng.below(2) == 0 {
                        weights.as_ptr()
                    } else {
                        ptr::null()
                    };
                    ibp_builder_add_conv2d(b, input, &p, w, bias, &mut node)
                }
                2 => {
                    let out = param(&mut rng);
                    // The input has at most 3 × 9 × 9 elements: 64 rows fit the buffer.
                    let w = if out <= 64 && fed_by_input {
                        weights.as_ptr()
                    } else {
                        ptr::null()
                    };
                    ibp_builder_add_linear(b, input, out, w, ptr::null(), &mut node)
                }
                3 | 4 => {
                    let p = ibp_pool2d_params {
                        struct_size: size_of::<ibp_pool2d_params>() as u32,
                        kernel_h: param(&mut rng),
                        kernel_w: param(&mut rng),
                        stride_h: param(&mut rng),
                        stride_w: param(&mut rng),
                        pad_h: param(&mut rng),
                        pad_w: param(&mut rng),
                    };
                    if rng.below(2) == 0 {
                        ibp_builder_add_maxpool2d(b, input, &p, &mut node)
                    } else {
                        ibp_builder_add_avgpool2d(b, input, &p, &mut node)
                    }
                }
                _ => match rng.below(4) {
                    0 => ibp_builder_add_relu(b, input, &mut node),
                    1 => ibp_builder_add_flatten(b, input, &mut node),
                    2 => ibp_builder_add_add(b, input, param(&mut rng) as u32, &mut node),
                    _ => ibp_builder_add_leaky_relu(
                        b,
                        input,
                        param(&mut rng) as f32 - 2.0,
                        &mut node,
                    ),
                },
            };
            assert!(ALLOWED.contains(&s), "case {case}: {s:?}: {}", last_error());
            if s == vram_status::VRAM_OK {
                assert_eq!(node, nodes, "case {case}: wrong node index");
                nodes += 1;
                accepted += 1;
            } else {
                assert_eq!(node, u32::MAX - 7, "case {case}: node written on failure");
                assert_eq!(ctx.used(), used, "case {case}: a failed add changed usage");
                refused += 1;
            }
        }
        let mut m = ptr::null_mut();
        let s = ibp_builder_build(b, &mut m);
        if s == vram_status::VRAM_OK {
            let (n_in, n_out) = (ibp_model_input_size(m), ibp_model_output_size(m));
            // Networks whose bounds fit a small buffer are propagated.
            if n_in * 2 <= 1 << 12 && n_out * 2 <= 1 << 16 {
                let lo = vec![-1.0f32; 2 * n_in];
                let hi = vec![1.0f32; 2 * n_in];
                let (mut ol, mut oh) = (vec![0f32; 2 * n_out], vec![0f32; 2 * n_out]);
                let s = ibp_propagate(
                    m,
                    2,
                    lo.as_ptr(),
                    hi.as_ptr(),
                    ol.as_mut_ptr(),
                    oh.as_mut_ptr(),
                );
                assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
                assert!(
                    ol.iter().zip(&oh).all(|(l, h)| l <= h),
                    "bounds out of order"
                );
                propagated += 1;
            }
            ibp_model_free(m);
        } else {
            assert_eq!(
                s,
                vram_status::VRAM_ERR_INVALID_ARGUMENT,
                "{}",
                last_error()
            );
        }
        assert_eq!(ctx.used(), 0, "a freed network left weights counted");
    }
    println!(
        "{case} builder calls: {accepted} accepted, {refused} refused, {propagated} networks propagated, 0 panics"
    );
}

#[test]
fn no_mutated_record_authenticates() {
    let mutations = env_count("VRAM_FUZZ_RECORDS", 100_000);
    let ctx = Ctx::new();
    let shard = ctx.seal("model.layers.7.mlp.down_proj.weight", &bytes(3 << 20, 9));
    let record = shard.record();
    assert_eq!(
        vram_record_verify(ctx.0, record.as_ptr(), record.len(), shard.0),
        vram_status::VRAM_OK
    );
    let mut rng = Rng(0x07ec_04d5);
    for i in 0..mutations {
        let mut r = record.clone();
        match rng.below(4) {
            0 => {
                for _ in 0..1 + rng.below(3) {
                    let k = rng.below(r.len() as u64) as usize;
                    r[k] ^= 1 << rng.below(8);
                }
            }
            1 => r.truncate(rng.below(r.len() as u64) as usize),
            2 => r.extend((0..1 + rng.below(64)).map(|_| rng.next() as u8)),
            _ => {
                let k = rng.below(r.len() as u64) as usize;
                r[k] = r[k].wrapping_add(1 + rng.below(255) as u8);
            }
        }
        if r == record {
            continue;
        }
        let s = vram_record_verify(ctx.0, r.as_ptr(), r.len(), shard.0);
        assert!(
            s == vram_status::VRAM_ERR_BAD_SEAL
                || (r.is_empty() && s == vram_status::VRAM_ERR_INVALID_ARGUMENT),
            "mutation {i} gave {s:?}"
        );
    }
    println!("{mutations} mutated records: 0 authenticated");
}
