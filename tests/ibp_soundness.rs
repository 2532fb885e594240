//! ibp_propagate through the C ABI encloses the exact real-number IBP bounds (rational
//! arithmetic), tightly, on random piecewise-linear networks and boxes, including degenerate
//! boxes, huge and tiny magnitudes and infinities; smooth activations against f64 with
//! explicit margins.

mod common;
#[path = "common/ibp.rs"]
mod ibp;

use std::ptr;

use common::*;
use ibp::*;
use vram::*;

fn propagate(model: *mut ibp_model, lo: &[f32], hi: &[f32], batch: usize) -> (Vec<f32>, Vec<f32>) {
    let n = ibp_model_output_size(model) * batch;
    let (mut ol, mut oh) = (vec![f32::NAN; n], vec![f32::NAN; n]);
    let s = ibp_propagate(
        model,
        batch,
        lo.as_ptr(),
        hi.as_ptr(),
        ol.as_mut_ptr(),
        oh.as_mut_ptr(),
    );
    assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
    assert!(
        ol.iter().chain(&oh).all(|v| !v.is_nan()),
        "every output written, none NaN"
    );
    (ol, oh)
}

/// Checks our bounds enclose the exact ones (an infinite bound always does) and are at most
/// `rel` wider relative to the exact width, plus `ulps_scale`: the few f32 ulps per layer that
/// outward rounding must add, on the scale of the computation (it decides for degenerate
/// boxes, whose exact width is 0).
#[allow(clippy::too_many_arguments)]
fn check(
    net: &Net,
    lo: &[f32],
    hi: &[f32],
    ol: &[f32],
    oh: &[f32],
    rel: f64,
    ulps_scale: f64,
    what: &str,
) {
    let (el, eh) = exact(net, lo, hi);
    for i in 0..el.len() {
        assert!(
            ol[i] == f32::NEG_INFINITY || q(ol[i]) <= el[i],
            "{what}: output {i}: lower {} above exact {}",
            ol[i],
            to_f64(&el[i])
        );
        assert!(
            oh[i] == f32::INFINITY || q(oh[i]) >= eh[i],
            "{what}: output {i}: upper {} below exact {}",
            oh[i],
            to_f64(&eh[i])
        );
        let exact_w = to_f64(&eh[i]) - to_f64(&el[i]);
        let ours = f64::from(oh[i]) - f64::from(ol[i]);
        let mag = to_f64(&el[i])
            .abs()
            .max(to_f64(&eh[i]).abs())
            .max(ulps_scale);
        assert!(
            ours - exact_w <= rel * exact_w + 1e-5 * mag,
            "{what}: output {i}: width {ours} vs exact {exact_w}"
        );
    }
}

fn random_mlp(r: &mut Rng, dims: &[usize], scale: f32) -> Net {
    ibp::mlp(r, dims, scale, true)
}

#[test]
fn random_mlps_enclose_exact_bounds() {
    let ctx = Ctx::new();
    let mut r = Rng(0x1234_5678_9abc_def1);
    for trial in 0..12 {
        let dims = [
            1 + (r.next() % 12) as usize,
            2 + (r.next() % 20) as usize,
            2 + (r.next() % 20) as usize,
            1 + (r.next() % 6) as usize,
        ];
        let net = random_mlp(&mut r, &dims, 1.0);
        let m = build(ctx.0, &format!("mlp{trial}"), &net);
        // Batches over 8 take the GPU's large-batch kernels (tensor cores on Hopper).
        let batch = if trial % 2 == 0 { 5 } else { 19 };
        let n = dims[0];
        let mut lo = Vec::new();
        let mut hi = Vec::new();
        for b in 0..batch {
            for _ in 0..n {
                let c = r.unit() * 2.0;
                let w = if b == 0 { 0.0 } else { r.unit().abs() * 0.5 }; // item 0: degenerate box
                lo.push(c - w);
                hi.push(c + w);
            }
        }
        let (ol, oh) = propagate(m, &lo, &hi, batch);
        let m_out = ibp_model_output_size(m);
        for b in 0..batch {
            check(
                &net,
                &lo[b * n..(b + 1) * n],
                &hi[b * n..(b + 1) * n],
                &ol[b * m_out..(b + 1) * m_out],
                &oh[b * m_out..(b + 1) * m_out],
                1e-4,
                1.0,
                &format!("trial {trial} item {b}"),
            );
        }
        ibp_model_free(m);
    }
}

#[test]
fn conv_pool_add_networks_enclose_exact_bounds() {
    let ctx = Ctx::new();
    let mut r = Rng(42);
    for trial in 0..4 {
        let (cin, hw, c1) = (2usize, 8usize, 3usize);
        let net = Net {
            input: vec![cin as u64, hw as u64, hw as u64],
            layers: vec![
                Layer::Conv {
                    cout: c1,
                    k: 3,
                    stride: 1,
                    pad: 1,
                    w: r.vec(c1 * cin * 9, 0.5),
                    b: r.vec(c1, 0.5),
                },
                Layer::Relu,
                Layer::Conv {
                    cout: c1,
                    k: 3,
                    stride: 1,
                    pad: 1,
                    w: r.vec(c1 * c1 * 9, 0.5),
                    b: r.vec(c1, 0.5),
                },
                Layer::Add(2), // residual: node 2 is the first ReLU
                Layer::Leaky(0.01),
                if trial % 2 == 0 {
                    Layer::MaxPool { k: 2, stride: 2 }
                } else {
                    Layer::AvgPool { k: 2, stride: 2 }
                },
                Layer::Conv {
                    cout: 2,
                    k: 3,
                    stride: 2,
                    pad: 0,
                    w: r.vec(2 * c1 * 9, 0.5),
                    b: r.vec(2, 0.5),
                },
                Layer::Flatten,
                Layer::Linear {
                    out: 3,
                    w: r.vec(3 * 2, 1.0),
                    b: r.vec(3, 1.0),
                },
            ],
        };
        let m = build(ctx.0, &format!("conv{trial}"), &net);
        let n = cin * hw * hw;
        let centre = r.vec(n, 1.0);
        let eps = 0.05 * (trial + 1) as f32;
        let lo: Vec<f32> = centre.iter().map(|c| c - eps).collect();
        let hi: Vec<f32> = centre.iter().map(|c| c + eps).collect();
        let (ol, oh) = propagate(m, &lo, &hi, 1);
        check(
            &net,
            &lo,
            &hi,
            &ol,
            &oh,
            1e-4,
            1.0,
            &format!("conv trial {trial}"),
        );
        ibp_model_free(m);
    }
}

#[test]
fn huge_and_tiny_magnitudes() {
    let ctx = Ctx::new();
    let mut r = Rng(7);
    // Weight scale, input scale, and the scale of the results (for the ulp allowance).
    for (scale, input, out) in [
        (1e15f32, 1e5f32, 1e35),
        (1e-15, 1e-15, 1e-30),
        (1.0, 1e30, 1e30),
        (1e-20, 1e-20, 1e-20),
        (1e18, 1e18, f64::INFINITY),
    ] {
        let net = random_mlp(&mut r, &[4, 6, 3], scale);
        let m = build(ctx.0, "mag", &net);
        let lo: Vec<f32> = (0..4).map(|_| r.unit() * input - input * 0.01).collect();
        let hi: Vec<f32> = lo.iter().map(|l| l + input * 0.02).collect();
        // One item, and 12 copies (the GPU's large-batch kernels).
        for batch in [1, 12] {
            let (bl, bh) = (lo.repeat(batch), hi.repeat(batch));
            let (ol, oh) = propagate(m, &bl, &bh, batch);
            if out.is_infinite() {
                // 1e18 · 1e18 · 1e18 overflows f32: bounds must say so (±∞), never NaN.
                assert!(ol.iter().chain(&oh).all(|v| !v.is_nan()));
                assert!(ol.iter().zip(&oh).all(|(l, h)| l <= h));
                continue;
            }
            for b in 0..batch {
                check(
                    &net,
                    &lo,
                    &hi,
                    &ol[b * 3..b * 3 + 3],
                    &oh[b * 3..b * 3 + 3],
                    1e-4,
                    out,
                    &format!("scale {scale} input {input} item {b} of {batch}"),
                );
            }
        }
        ibp_model_free(m);
    }
}

#[test]
fn infinities_propagate_soundly_without_nan() {
    let ctx = Ctx::new();
    let mut r = Rng(9);
    let net = random_mlp(&mut r, &[3, 5, 2], 1.0);
    let m = build(ctx.0, "inf", &net);
    let lo = [f32::NEG_INFINITY, -1.0, 0.5];
    let hi = [1.0, f32::INFINITY, 0.5];
    // One item, and 12 copies (the GPU's large-batch kernels).
    for batch in [1, 12] {
        let (ol, oh) = propagate(m, &lo.repeat(batch), &hi.repeat(batch), batch);
        assert!(ol.iter().chain(&oh).all(|v| !v.is_nan()));
        // Sampled points of the box, evaluated exactly, lie inside every item's bounds.
        for t in 0..200 {
            let x = [-(t as f32) * 1e3, (t as f32) * 7e2, 0.5];
            let xl: Vec<f32> = x.to_vec();
            let (el, eh) = exact(&net, &xl, &xl);
            for i in 0..2 * batch {
                assert!(q(ol[i].max(f32::MIN)) <= el[i % 2] || ol[i] == f32::NEG_INFINITY);
                assert!(q(oh[i].min(f32::MAX)) >= eh[i % 2] || oh[i] == f32::INFINITY);
            }
        }
        let all_inf = [f32::NEG_INFINITY; 3].repeat(batch);
        let pos_inf = [f32::INFINITY; 3].repeat(batch);
        let (ol, oh) = propagate(m, &all_inf, &pos_inf, batch);
        assert!(ol.iter().chain(&oh).all(|v| !v.is_nan()));
    }
    ibp_model_free(m);
}

#[test]
fn smooth_activations_against_f64_with_margins() {
    let ctx = Ctx::new();
    let mut r = Rng(11);
    for smooth in [Layer::Sigmoid, Layer::Tanh] {
        let w1 = r.vec(4 * 6, 1.0);
        let b1 = r.vec(6, 1.0);
        let w2 = r.vec(6 * 2, 1.0);
        let b2 = r.vec(2, 1.0);
        let net = Net {
            input: vec![4],
            layers: vec![
                Layer::Linear {
                    out: 6,
                    w: w1.clone(),
                    b: b1.clone(),
                },
                smooth.clone(),
                Layer::Linear {
                    out: 2,
                    w: w2.clone(),
                    b: b2.clone(),
                },
            ],
        };
        let m = build(ctx.0, "smooth", &net);
        let lo: Vec<f32> = r.vec(4, 2.0);
        let hi: Vec<f32> = lo.iter().map(|l| l + 0.3).collect();
        let (ol, oh) = propagate(m, &lo, &hi, 1);
        // Reference: exact first layer, f64 activation on the endpoints widened by 1e-12
        // relative (far more than libm's error), exact second layer on that box.
        let first = Net {
            input: vec![4],
            layers: vec![Layer::Linear {
                out: 6,
                w: w1,
                b: b1,
            }],
        };
        let (hl, hh) = exact(&first, &lo, &hi);
        let f = |x: f64| {
            if matches!(smooth, Layer::Sigmoid) {
                1.0 / (1.0 + (-x).exp())
            } else {
                x.tanh()
            }
        };
        let al: Vec<f64> = hl.iter().map(|v| f(to_f64(v))).collect();
        let ah: Vec<f64> = hh.iter().map(|v| f(to_f64(v))).collect();
        for o in 0..2 {
            let (mut lo_ref, mut hi_ref) = (f64::from(b2[o]), f64::from(b2[o]));
            for j in 0..6 {
                let w = f64::from(w2[o * 6 + j]);
                if w >= 0.0 {
                    lo_ref += w * al[j];
                    hi_ref += w * ah[j];
                } else {
                    lo_ref += w * ah[j];
                    hi_ref += w * al[j];
                }
            }
            let margin = 1e-9 * (lo_ref.abs() + hi_ref.abs() + 1.0);
            assert!(
                f64::from(ol[o]) <= lo_ref + margin,
                "{smooth:?} lower {} vs {lo_ref}",
                ol[o]
            );
            assert!(
                f64::from(oh[o]) >= hi_ref - margin,
                "{smooth:?} upper {} vs {hi_ref}",
                oh[o]
            );
            let excess = (f64::from(oh[o]) - f64::from(ol[o])) - (hi_ref - lo_ref);
            assert!(
                excess <= 1e-4 * (hi_ref - lo_ref) + 1e-6,
                "{smooth:?} too loose: {excess}"
            );
        }
        ibp_model_free(m);
    }
}

#[test]
fn spec_matrix_is_folded_and_sound() {
    let ctx = Ctx::new();
    let mut r = Rng(5);
    let net = random_mlp(&mut r, &[5, 8, 4], 1.0);
    let m = build(ctx.0, "spec", &net);
    let lo: Vec<f32> = r.vec(5, 1.0);
    let hi: Vec<f32> = lo.iter().map(|l| l + 0.2).collect();
    // C = rows (y0 - y1), (y2 - y3); d = (0.5, -0.25)
    let c = [1.0f32, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, -1.0];
    let d = [0.5f32, -0.25];
    let opts = ibp_propagate_options {
        struct_size: size_of::<ibp_propagate_options>() as u32,
        memory: ibp_memory::IBP_MEMORY_HOST as u32,
        stream: ptr::null_mut(),
        spec_rows: 2,
        spec_c: c.as_ptr(),
        spec_d: d.as_ptr(),
        flags: 0,
        method: 0,
    };
    let (mut sl, mut sh) = ([0f32; 2], [0f32; 2]);
    assert_eq!(
        ibp_propagate_ex(
            m,
            1,
            lo.as_ptr(),
            hi.as_ptr(),
            sl.as_mut_ptr(),
            sh.as_mut_ptr(),
            &opts
        ),
        vram_status::VRAM_OK,
        "{}",
        last_error()
    );
    // Exact folded reference: the spec as one more linear layer folded into the last one.
    let Layer::Linear { w, b, .. } = net.layers.last().unwrap().clone() else {
        unreachable!()
    };
    let mut folded = net.clone();
    folded.layers.pop();
    let (hl, hh) = exact(&folded, &lo, &hi);
    for k in 0..2 {
        let (mut el, mut eh) = (q(d[k]), q(d[k]));
        for j in 0..8 {
            let mkj: Q = (0..4)
                .map(|i| q(c[k * 4 + i]) * q(w[i * 8 + j]))
                .fold(q(0.0), |a, x| a + x);
            if mkj >= q(0.0) {
                el += &mkj * &hl[j];
                eh += &mkj * &hh[j];
            } else {
                el += &mkj * &hh[j];
                eh += &mkj * &hl[j];
            }
        }
        for i in 0..4 {
            el += q(c[k * 4 + i]) * q(b[i]);
            eh += q(c[k * 4 + i]) * q(b[i]);
        }
        assert!(
            q(sl[k]) <= el && q(sh[k]) >= eh,
            "spec row {k} not enclosed"
        );
        let ew = to_f64(&eh) - to_f64(&el);
        assert!(f64::from(sh[k] - sl[k]) - ew <= 1e-4 * ew + 1e-6);
    }
    // Folding is tighter than (or equal to) bounding C·y from the output box.
    let (ol, oh) = propagate(m, &lo, &hi, 1);
    let naive_w = (oh[0] - ol[0]) + (oh[1] - ol[1]);
    assert!(sh[0] - sl[0] <= naive_w + 1e-5);
    ibp_model_free(m);
}

#[test]
fn batchnorm_against_f64_with_margins() {
    let ctx = Ctx::new();
    let (gamma, beta, mean, var) = (
        vec![1.5f32, -0.75],
        vec![0.1f32, -0.2],
        vec![0.3f32, -1.0],
        vec![0.04f32, 2.5],
    );
    let eps = 1e-5;
    let net = Net {
        input: vec![2, 2, 2],
        layers: vec![Layer::BatchNorm {
            gamma: gamma.clone(),
            beta: beta.clone(),
            mean: mean.clone(),
            var: var.clone(),
            eps,
        }],
    };
    let m = build(ctx.0, "bn", &net);
    let lo: Vec<f32> = vec![-1.0, 0.0, 0.5, 2.0, -3.0, -1.0, 0.0, 1.0];
    let hi: Vec<f32> = lo.iter().map(|l| l + 0.25).collect();
    let (ol, oh) = propagate(m, &lo, &hi, 1);
    for i in 0..8 {
        let c = i / 4;
        let a = f64::from(gamma[c]) / (f64::from(var[c]) + eps).sqrt();
        let f = |x: f32| a * (f64::from(x) - f64::from(mean[c])) + f64::from(beta[c]);
        let (rl, rh) = (f(lo[i]).min(f(hi[i])), f(lo[i]).max(f(hi[i])));
        let margin = 1e-12 * (rl.abs() + rh.abs() + 1.0);
        assert!(
            f64::from(ol[i]) <= rl + margin && f64::from(oh[i]) >= rh - margin,
            "bn {i}: [{}, {}] vs [{rl}, {rh}]",
            ol[i],
            oh[i]
        );
        assert!(
            f64::from(oh[i] - ol[i]) - (rh - rl) <= 1e-4 * (rh - rl) + 1e-6,
            "bn {i} too loose"
        );
    }
    ibp_model_free(m);
}
