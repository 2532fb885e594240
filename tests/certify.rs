//! ibp_certify through the C ABI: verdicts on networks whose answer is known by construction,
//! never a wrong one at a boundary, cancellation, damaged weights, and a handful of ACAS Xu
//! instances whose answer a counterexample (checked here in f64, independently) settles.

mod common;
#[path = "common/ibp.rs"]
mod ibp;

use std::ffi::CString;
use std::ptr;

use common::*;
use ibp::{Layer, Net, build};
use vram::*;

fn spec(tag: &str, text: &str) -> *mut ibp_spec {
    let p = std::env::temp_dir().join(format!("vram-certify-{tag}-{}.vnnlib", std::process::id()));
    std::fs::write(&p, text).unwrap();
    let c = CString::new(p.to_str().unwrap()).unwrap();
    let mut s = ptr::null_mut();
    assert_eq!(
        ibp_spec_from_vnnlib(c.as_ptr(), &mut s),
        vram_status::VRAM_OK,
        "{}",
        last_error()
    );
    std::fs::remove_file(p).unwrap();
    s
}

struct Found {
    verdict: u32,
    x: Vec<f64>,
    y_lo: Vec<f64>,
    y_hi: Vec<f64>,
    result: ibp_certify_result,
}

fn certify(m: *const ibp_model, s: *const ibp_spec, timeout: f64) -> (vram_status, Found) {
    let (n_in, n_out) = (ibp_model_input_size(m), ibp_model_output_size(m));
    let (mut x, mut lo, mut hi) = (
        vec![f64::NAN; n_in],
        vec![f64::NAN; n_out],
        vec![f64::NAN; n_out],
    );
    let opts = ibp_certify_options {
        struct_size: size_of::<ibp_certify_options>() as u32,
        flags: 0,
        timeout_seconds: timeout,
        seed: 7,
        progress: None,
        userdata: ptr::null_mut(),
    };
    let mut r = ibp_certify_result {
        struct_size: size_of::<ibp_certify_result>() as u32,
        verdict: 0,
        boxes: 0,
        proven_fraction: 0.0,
        seconds: 0.0,
        weights_root: [0; 32],
        case_index: 0,
        counterexample: x.as_mut_ptr(),
        counterexample_out_lower: lo.as_mut_ptr(),
        counterexample_out_upper: hi.as_mut_ptr(),
    };
    let st = ibp_certify(m, s, &opts, &mut r);
    (
        st,
        Found {
            verdict: r.verdict,
            x,
            y_lo: lo,
            y_hi: hi,
            result: r,
        },
    )
}

const HOLDS: u32 = ibp_verdict::IBP_VERDICT_HOLDS as u32;
const VIOLATED: u32 = ibp_verdict::IBP_VERDICT_VIOLATED as u32;
const UNKNOWN: u32 = ibp_verdict::IBP_VERDICT_UNKNOWN as u32;

/// y = relu(x0 − x1) + relu(x0 + x1): on [0, 1]², y ∈ [0, 2], and y = 2 exactly where x0 = 1.
fn vee() -> Net {
    Net {
        input: vec![2],
        layers: vec![
            Layer::Linear {
                out: 2,
                w: vec![1.0, -1.0, 1.0, 1.0],
                b: vec![0.0, 0.0],
            },
            Layer::Relu,
            Layer::Linear {
                out: 1,
                w: vec![1.0, 1.0],
                b: vec![0.0],
            },
        ],
    }
}

fn vee_exact(x: &[f64]) -> f64 {
    (x[0] - x[1]).max(0.0) + (x[0] + x[1]).max(0.0)
}

const BOX: &str = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n\
(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n";

#[test]
fn verdicts_known_by_construction() {
    known_verdicts(&host_ctx());
}

fn known_verdicts(ctx: &Ctx) {
    let m = build(ctx.0, "vee", &vee());
    // Holds: y never goes below 0 (nor above 2.0001).
    for unsafe_if in [
        "(assert (<= Y_0 -0.001))",
        "(assert (>= Y_0 2.0001))",
        "(assert (or (<= Y_0 -0.5) (>= Y_0 2.5)))",
    ] {
        let s = spec("holds", &format!("{BOX}{unsafe_if}\n"));
        let (st, f) = certify(m, s, 30.0);
        assert_eq!(st, vram_status::VRAM_OK, "{}", last_error());
        assert_eq!(f.verdict, HOLDS, "{unsafe_if}");
        assert_eq!(f.result.proven_fraction, 1.0);
        assert!(
            f.x.iter().all(|v| v.is_nan()),
            "counterexample written for holds"
        );
        ibp_spec_free(s);
    }
    // Violated: y ≥ 1.9 near x0 = 1; the witness is in the box and really unsafe.
    for (unsafe_if, check) in [
        (
            "(assert (>= Y_0 1.9))",
            &(|y: f64| y >= 1.9) as &dyn Fn(f64) -> bool,
        ),
        (
            "(assert (or (<= Y_0 -1.0) (and (<= Y_0 0.3) (>= Y_0 0.1))))",
            &|y: f64| (0.1..=0.3).contains(&y),
        ),
    ] {
        let s = spec("violated", &format!("{BOX}{unsafe_if}\n"));
        let (st, f) = certify(m, s, 30.0);
        assert_eq!(st, vram_status::VRAM_OK, "{}", last_error());
        assert_eq!(f.verdict, VIOLATED, "{unsafe_if}");
        assert!(
            f.x.iter().all(|v| (0.0..=1.0).contains(v)),
            "{:?} outside the box",
            f.x
        );
        let y = vee_exact(&f.x);
        assert!(check(y), "{unsafe_if}: witness {:?} gives {y}", f.x);
        assert!(f.y_lo[0] <= y && y <= f.y_hi[0]);
        ibp_spec_free(s);
    }
    // A boundary: y ≥ 2 is met exactly (x0 = 1), never strictly. Whatever the search finds,
    // it must not say holds.
    let s = spec("edge", &format!("{BOX}(assert (>= Y_0 2.0))\n"));
    let (st, f) = certify(m, s, 2.0);
    assert_eq!(st, vram_status::VRAM_OK, "{}", last_error());
    assert_ne!(f.verdict, HOLDS);
    if f.verdict == VIOLATED {
        assert!(vee_exact(&f.x) >= 2.0);
    }
    ibp_spec_free(s);
    ibp_model_free(m);
    assert_eq!(ctx.used(), 0);
}

unsafe extern "C" fn cancel_after_two(
    userdata: *mut std::ffi::c_void,
    boxes: u64,
    proven: f64,
) -> i32 {
    assert!((0.0..=1.0).contains(&proven) && boxes > 0);
    // SAFETY: the test passes a pointer to its u32 counter.
    let calls = unsafe { &mut *userdata.cast::<u32>() };
    *calls += 1;
    i32::from(*calls >= 2)
}

#[test]
fn cancellation_bad_specs_and_damaged_weights() {
    let ctx = host_ctx();
    let mut r = Rng(0xcafe_f00d);
    // A deeper network and a tight property: the search needs many rounds.
    let net = Net {
        input: vec![2],
        layers: vec![
            Layer::Linear {
                out: 16,
                w: r.vec(32, 1.0),
                b: r.vec(16, 0.3),
            },
            Layer::Relu,
            Layer::Linear {
                out: 16,
                w: r.vec(256, 0.5),
                b: r.vec(16, 0.3),
            },
            Layer::Relu,
            Layer::Linear {
                out: 1,
                w: r.vec(16, 0.5),
                b: vec![0.0],
            },
        ],
    };
    let m = build(ctx.0, "deep", &net);
    let s = spec("tight", &format!("{BOX}(assert (>= Y_0 1000.0))\n"));
    let mut calls = 0u32;
    let opts = ibp_certify_options {
        struct_size: size_of::<ibp_certify_options>() as u32,
        flags: 0,
        timeout_seconds: 60.0,
        seed: 1,
        progress: Some(cancel_after_two),
        userdata: (&raw mut calls).cast(),
    };
    let mut res = certify(m, s, 1.0).1.result;
    res.verdict = 99;
    res.counterexample = ptr::null_mut();
    res.counterexample_out_lower = ptr::null_mut();
    res.counterexample_out_upper = ptr::null_mut();
    let st = ibp_certify(m, s, &opts, &mut res);
    // Either it was proven in the first round (then no cancel) or it was cancelled.
    if st == vram_status::VRAM_ERR_CANCELLED {
        assert_eq!(res.verdict, 99, "written on failure");
        assert_eq!(calls, 2);
    } else {
        assert_eq!(st, vram_status::VRAM_OK);
    }
    // A property over 3 inputs does not fit a 2-input model.
    let s3 = spec(
        "three",
        "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n(assert (>= X_2 0.0))\n(assert (<= X_2 1.0))\n(assert (>= Y_0 3.0))\n",
    );
    assert_eq!(
        certify(m, s3, 1.0).0,
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("inputs"), "{}", last_error());
    // Bad options, NULLs, a stale struct size.
    let mut bad = opts;
    bad.timeout_seconds = -1.0;
    assert_eq!(
        ibp_certify(m, s, &bad, &mut res),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        ibp_certify(ptr::null(), s, ptr::null(), &mut res),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        ibp_certify(m, ptr::null(), ptr::null(), &mut res),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    let mut small = res;
    small.struct_size = 8;
    assert_eq!(
        ibp_certify(m, s, ptr::null(), &mut small),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    // A weight flipped since sealing: an error, never a verdict.
    assert_eq!(ibp_model_debug_flip_bit(m, 1, 3), vram_status::VRAM_OK);
    let (st, f) = certify(m, s, 5.0);
    assert_eq!(st, vram_status::VRAM_ERR_INTEGRITY, "{}", last_error());
    assert_eq!(f.verdict, 0);
    assert_eq!(ibp_model_debug_flip_bit(m, 1, 3), vram_status::VRAM_OK);
    let (st, f1) = certify(m, s, 5.0);
    assert_eq!(st, vram_status::VRAM_OK);
    let (_, f2) = certify(m, s, 5.0);
    assert_eq!(f1.result.weights_root, f2.result.weights_root);
    assert_ne!(f1.result.weights_root, [0; 32]);
    // A malformed property names its line and column.
    let p = std::env::temp_dir().join(format!("vram-certify-bad-{}.vnnlib", std::process::id()));
    std::fs::write(
        &p,
        "(declare-const X_0 Real)\n(assert (<= X_0 (* X_0 X_0)))\n",
    )
    .unwrap();
    let c = CString::new(p.to_str().unwrap()).unwrap();
    let mut sp = ptr::null_mut();
    assert_eq!(
        ibp_spec_from_vnnlib(c.as_ptr(), &mut sp),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    assert!(sp.is_null());
    assert!(last_error().contains("line 2"), "{}", last_error());
    std::fs::remove_file(p).unwrap();
    for sp in [s, s3] {
        ibp_spec_free(sp);
    }
    ibp_model_free(m);
    assert_eq!(ctx.used(), 0);
}

/// The network of an ACAS Xu NNet file, evaluated in f64 on normalised inputs (what the ONNX
/// file computes): written here independently of libvram.
fn acas_eval(path: &std::path::Path, x: &[f64]) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows = text.lines().filter(|l| !l.starts_with("//")).map(|l| {
        l.split(',')
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().parse::<f64>().unwrap())
            .collect::<Vec<f64>>()
    });
    rows.next();
    let sizes: Vec<usize> = rows.next().unwrap().iter().map(|&v| v as usize).collect();
    for _ in 0..5 {
        rows.next();
    }
    let mut v = x.to_vec();
    for l in 0..sizes.len() - 1 {
        let w: Vec<Vec<f64>> = (0..sizes[l + 1]).map(|_| rows.next().unwrap()).collect();
        let b: Vec<f64> = (0..sizes[l + 1]).map(|_| rows.next().unwrap()[0]).collect();
        v = w
            .iter()
            .zip(&b)
            .map(|(row, bi)| {
                // The sealed weights are float32: evaluate with the same values.
                let s: f64 = row
                    .iter()
                    .zip(&v)
                    .map(|(&wj, &xj)| f64::from(wj as f32) * xj)
                    .sum::<f64>()
                    + f64::from(*bi as f32);
                if l + 2 < sizes.len() { s.max(0.0) } else { s }
            })
            .collect();
    }
    v
}

#[test]
fn acasxu_instances_settled_by_proof_or_checked_witness() {
    acasxu_instances(&host_ctx());
}

fn acasxu_instances(ctx: &Ctx) {
    let Some(dir) = acasxu_onnx_dir() else {
        println!("SKIPPED acasxu certify: ../shared/data/acasxu not found (set VRAM_ACASXU_DIR)");
        return;
    };
    // (network, property, expected): VNN-COMP 2021's answers. 1_9 property 7 needs a wider
    // first search than 256 samples; 2_9 property 8 is violated in its second case only,
    // which a search that proves the first case before looking at the second never reaches;
    // 5_3 property 2 only on a ridge between two constraints at a corner of the box, which
    // gradient steps never reached (the population search does, after 2^16 boxes); 3_7
    // property 1 holds, but a search that bisects the inputs the bound is most sensitive to,
    // however thin they already are, never narrows the two that keep the relaxation loose.
    for (net, prop, expected) in [
        ("1_1", 1, HOLDS),
        ("3_7", 1, HOLDS),
        ("1_1", 4, HOLDS),
        ("3_3", 4, HOLDS),
        ("2_1", 2, VIOLATED),
        ("5_5", 2, VIOLATED),
        ("1_9", 7, VIOLATED),
        ("2_9", 8, VIOLATED),
        ("5_3", 2, VIOLATED),
    ] {
        let name = format!("ACASXU_experimental_v2a_{net}");
        let c = CString::new(dir.join(format!("onnx/{name}.onnx")).to_str().unwrap()).unwrap();
        let mut m = ptr::null_mut();
        assert_eq!(
            ibp_model_from_onnx(ctx.0, c.as_ptr(), ptr::null(), &mut m),
            vram_status::VRAM_OK
        );
        let cp = CString::new(
            dir.join(format!("vnnlib/prop_{prop}.vnnlib"))
                .to_str()
                .unwrap(),
        )
        .unwrap();
        let mut s = ptr::null_mut();
        assert_eq!(
            ibp_spec_from_vnnlib(cp.as_ptr(), &mut s),
            vram_status::VRAM_OK
        );
        let (st, f) = certify(m, s, 60.0);
        assert_eq!(st, vram_status::VRAM_OK, "{}", last_error());
        assert_eq!(
            f.verdict, expected,
            "{net} prop {prop}: verdict {} after {} boxes",
            f.verdict, f.result.boxes
        );
        if expected == VIOLATED {
            // Checked in f64 from the NNet file's weights, independently of libvram, against
            // the property's unsafe set: 2, Y_0 the largest output; 7, Y_3 or Y_4 at most each
            // of Y_0..Y_2; 8, one of Y_2..Y_4 at most Y_0 and Y_1.
            let y = acas_eval(&dir.join(format!("nnet/{name}.nnet")), &f.x);
            let below = |k: usize, of: &[usize]| of.iter().all(|&j| y[k] <= y[j]);
            let unsafe_ = match prop {
                2 => (1..5).all(|j| y[0] >= y[j]),
                7 => below(3, &[0, 1, 2]) || below(4, &[0, 1, 2]),
                8 => (2..5).any(|k| below(k, &[0, 1])),
                _ => false,
            };
            assert!(unsafe_, "{net} prop {prop}: witness outputs {y:?}");
            for (j, yj) in y.iter().enumerate() {
                assert!(
                    (f.y_lo[j] - 1e-9..=f.y_hi[j] + 1e-9).contains(yj),
                    "{net}: y{j}"
                );
            }
        }
        assert_ne!(f.verdict, UNKNOWN);
        ibp_spec_free(s);
        ibp_model_free(m);
    }
    assert_eq!(ctx.used(), 0);
}

/// On the CUDA backend the search runs on the GPU over the weights where they live: the same
/// verdicts, witnesses checked the same way; a graph the GPU kernel does not run is refused by
/// node (never run on a host copy).
#[test]
fn on_the_gpu_the_same_verdicts() {
    let Some(ctx) = gpu_ctx("certify") else {
        return;
    };
    known_verdicts(&ctx);
    acasxu_instances(&ctx);
    let mut sig = vee();
    sig.layers[1] = Layer::Sigmoid;
    let m = build(ctx.0, "vee_sigmoid", &sig);
    let s = spec("gpu", &format!("{BOX}(assert (<= Y_0 -0.001))\n"));
    let (st, f) = certify(m, s, 5.0);
    assert_eq!(st, vram_status::VRAM_ERR_UNSUPPORTED, "{}", last_error());
    assert!(
        last_error().contains("node 2 (sigmoid)"),
        "{}",
        last_error()
    );
    assert_eq!(f.verdict, 0);
    ibp_spec_free(s);
    ibp_model_free(m);
    assert_eq!(ctx.used(), 0);
}
