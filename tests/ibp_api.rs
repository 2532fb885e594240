//! The ibp_* C API: bad input is refused with the right status and changes nothing; models
//! verify their sealed weights; ACAS Xu networks load from NNet and match a direct evaluation.

mod common;
#[path = "common/ibp.rs"]
mod ibp;

use std::ffi::CString;
use std::ptr;

use common::*;
use ibp::*;
use vram::*;

fn expect(s: vram_status, want: vram_status, arg: &str) {
    assert_eq!(s, want, "{}", last_error());
    assert!(
        last_error().contains(arg),
        "message {:?} should name {arg:?}",
        last_error()
    );
}

fn small(ctx: &Ctx) -> *mut ibp_model {
    let net = Net {
        input: vec![2],
        layers: vec![
            Layer::Linear {
                out: 3,
                w: vec![1.0, -2.0, 0.5, 0.25, -1.0, 1.0],
                b: vec![0.1, 0.2, 0.3],
            },
            Layer::Relu,
            Layer::Linear {
                out: 2,
                w: vec![1.0, 1.0, -1.0, 0.5, -0.5, 2.0],
                b: vec![0.0, 1.0],
            },
        ],
    };
    build(ctx.0, "small", &net)
}

#[test]
fn builder_rejects_bad_input() {
    let ctx = Ctx::new();
    let shape = [4u64];
    let mut b = ptr::null_mut();
    expect(
        ibp_builder_new(ptr::null_mut(), c"n".as_ptr(), shape.as_ptr(), 1, &mut b),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "ctx",
    );
    expect(
        ibp_builder_new(ctx.0, c"../n".as_ptr(), shape.as_ptr(), 1, &mut b),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "name",
    );
    expect(
        ibp_builder_new(ctx.0, c"n".as_ptr(), shape.as_ptr(), 0, &mut b),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "rank",
    );
    expect(
        ibp_builder_new(ctx.0, c"n".as_ptr(), [0u64].as_ptr(), 1, &mut b),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "input_shape",
    );
    assert!(b.is_null());
    assert_eq!(
        ibp_builder_new(ctx.0, c"n".as_ptr(), shape.as_ptr(), 1, &mut b),
        vram_status::VRAM_OK
    );

    let w = [1.0f32; 8];
    let mut node = 77u32;
    expect(
        ibp_builder_add_linear(b, 5, 2, w.as_ptr(), ptr::null(), &mut node),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "input",
    );
    expect(
        ibp_builder_add_linear(b, IBP_PREV, 2, ptr::null(), ptr::null(), &mut node),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "weight",
    );
    expect(
        ibp_builder_add_linear(b, IBP_PREV, 0, w.as_ptr(), ptr::null(), &mut node),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "out_features",
    );
    let bad = [1.0, f32::NAN, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    expect(
        ibp_builder_add_linear(b, IBP_PREV, 2, bad.as_ptr(), ptr::null(), &mut node),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "weight",
    );
    expect(
        ibp_builder_add_leaky_relu(b, IBP_PREV, -0.5, &mut node),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "alpha",
    );
    let conv = ibp_conv2d_params {
        struct_size: size_of::<ibp_conv2d_params>() as u32,
        out_channels: 1,
        kernel_h: 1,
        kernel_w: 1,
        stride_h: 1,
        stride_w: 1,
        pad_h: 0,
        pad_w: 0,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    };
    expect(
        ibp_builder_add_conv2d(b, IBP_PREV, &conv, w.as_ptr(), ptr::null(), &mut node),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "input",
    );
    let pool = ibp_pool2d_params {
        struct_size: 3,
        kernel_h: 2,
        kernel_w: 2,
        stride_h: 2,
        stride_w: 2,
        pad_h: 0,
        pad_w: 0,
    };
    expect(
        ibp_builder_add_maxpool2d(b, IBP_PREV, &pool, &mut node),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "struct_size",
    );
    assert_eq!(node, 77, "node_out untouched on failure");
    assert_eq!(ctx.used(), 0, "no weight sealed by a refused layer");

    assert_eq!(
        ibp_builder_add_linear(b, IBP_PREV, 2, w.as_ptr(), ptr::null(), &mut node),
        vram_status::VRAM_OK
    );
    assert_eq!(node, 1);
    expect(
        ibp_builder_add_add(b, IBP_PREV, 0, &mut node),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "other",
    );
    assert!(ctx.used() > 0);
    ibp_builder_free(b);
    assert_eq!(
        ctx.used(),
        0,
        "freeing the builder frees its sealed weights"
    );

    // An empty network cannot be built; the builder is consumed either way.
    let mut b2 = ptr::null_mut();
    assert_eq!(
        ibp_builder_new(ctx.0, c"e".as_ptr(), shape.as_ptr(), 1, &mut b2),
        vram_status::VRAM_OK
    );
    let mut m = ptr::null_mut();
    expect(
        ibp_builder_build(b2, &mut m),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "no layers",
    );
    assert!(m.is_null());
    ibp_builder_free(ptr::null_mut());
    ibp_model_free(ptr::null_mut());
}

#[test]
fn propagate_rejects_bad_boxes_and_writes_nothing() {
    let ctx = Ctx::new();
    let m = small(&ctx);
    assert_eq!(ibp_model_input_size(m), 2);
    assert_eq!(ibp_model_output_size(m), 2);
    assert_eq!(ibp_model_input_size(ptr::null()), 0);
    let (mut ol, mut oh) = ([7.0f32; 4], [7.0f32; 4]);
    let lo = [0.0f32, 0.0, 1.0, f32::NAN];
    let hi = [1.0f32, 1.0, 2.0, 2.0];
    expect(
        ibp_propagate(
            m,
            2,
            lo.as_ptr(),
            hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr(),
        ),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "element 3 is NaN",
    );
    let lo2 = [0.0f32, 2.0, 1.0, 1.0];
    expect(
        ibp_propagate(
            m,
            2,
            lo2.as_ptr(),
            hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr(),
        ),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "element 1: lower 2 > upper 1",
    );
    expect(
        ibp_propagate(
            m,
            0,
            lo2.as_ptr(),
            hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr(),
        ),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "batch",
    );
    expect(
        ibp_propagate(
            ptr::null(),
            1,
            lo2.as_ptr(),
            hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr(),
        ),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "model",
    );
    expect(
        ibp_propagate(
            m,
            1,
            ptr::null(),
            hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr(),
        ),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "in_lower",
    );
    expect(
        ibp_propagate(
            m,
            1,
            lo2.as_ptr(),
            hi.as_ptr(),
            ptr::null_mut(),
            oh.as_mut_ptr(),
        ),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "out_lower",
    );
    assert!(ol.iter().chain(&oh).all(|&v| v == 7.0), "outputs untouched");

    let mut opts = ibp_propagate_options {
        struct_size: 1,
        memory: 0,
        stream: ptr::null_mut(),
        spec_rows: 0,
        spec_c: ptr::null(),
        spec_d: ptr::null(),
        flags: 0,
        method: 0,
    };
    let ok_lo = [0.0f32, 0.0];
    let ok_hi = [1.0f32, 1.0];
    expect(
        ibp_propagate_ex(
            m,
            1,
            ok_lo.as_ptr(),
            ok_hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr(),
            &opts,
        ),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "struct_size",
    );
    opts.struct_size = size_of::<ibp_propagate_options>() as u32;
    opts.memory = 9;
    expect(
        ibp_propagate_ex(
            m,
            1,
            ok_lo.as_ptr(),
            ok_hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr(),
            &opts,
        ),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "memory",
    );
    opts.memory = 0;
    opts.spec_rows = 1;
    expect(
        ibp_propagate_ex(
            m,
            1,
            ok_lo.as_ptr(),
            ok_hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr(),
            &opts,
        ),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "spec_c",
    );
    if test_backend() == vram_backend::VRAM_BACKEND_HOST {
        opts.spec_rows = 0;
        opts.memory = 1;
        expect(
            ibp_propagate_ex(
                m,
                1,
                ok_lo.as_ptr(),
                ok_hi.as_ptr(),
                ol.as_mut_ptr(),
                oh.as_mut_ptr(),
                &opts,
            ),
            vram_status::VRAM_ERR_UNSUPPORTED,
            "device memory",
        );
    }
    expect(
        ibp_propagate_ex(
            m,
            1,
            ok_lo.as_ptr(),
            ok_hi.as_ptr(),
            ol.as_mut_ptr(),
            oh.as_mut_ptr(),
            ptr::null(),
        ),
        vram_status::VRAM_ERR_NULL_ARGUMENT,
        "opts",
    );
    assert!(ol.iter().chain(&oh).all(|&v| v == 7.0), "outputs untouched");
    ibp_model_free(m);
}

#[test]
fn model_verify_catches_a_flipped_weight() {
    let ctx = Ctx::new();
    let m = small(&ctx);
    let mut r = vram_verify_report::default();
    assert_eq!(ibp_model_verify(ctx.0, m, &mut r), vram_status::VRAM_OK);
    assert_eq!(
        r.total_regions, 4,
        "two weights and two biases, one region each"
    );
    expect(
        ibp_model_debug_flip_bit(m, 2, 0),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "node",
    );
    expect(
        ibp_model_debug_flip_bit(m, 3, 1 << 20),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "bit_index",
    );
    assert_eq!(ibp_model_debug_flip_bit(m, 3, 5), vram_status::VRAM_OK);
    assert_eq!(
        ibp_model_verify(ctx.0, m, &mut r),
        vram_status::VRAM_ERR_INTEGRITY
    );
    assert_eq!(r.damaged_regions, 1);
    assert_eq!(ibp_model_debug_flip_bit(m, 3, 5), vram_status::VRAM_OK);
    assert_eq!(
        ibp_model_verify(ctx.0, m, ptr::null_mut()),
        vram_status::VRAM_OK
    );
    // A model is used from many threads at once.
    let mp = m as usize;
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                let m = mp as *const ibp_model;
                let lo = [t as f32 * 0.1, -1.0];
                let hi = [t as f32 * 0.1 + 0.5, 1.0];
                let (mut ol, mut oh) = ([0f32; 2], [0f32; 2]);
                for _ in 0..50 {
                    assert_eq!(
                        ibp_propagate(
                            m,
                            1,
                            lo.as_ptr(),
                            hi.as_ptr(),
                            ol.as_mut_ptr(),
                            oh.as_mut_ptr()
                        ),
                        vram_status::VRAM_OK
                    );
                    assert!(ol[0] <= oh[0] && ol[1] <= oh[1]);
                }
            });
        }
    });
    ibp_model_free(m);
    assert_eq!(ctx.used(), 0, "the model's weights are released with it");
}

/// The ACAS Xu data beside the project (or under VRAM_ACASXU_DIR).
fn acasxu_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("VRAM_ACASXU_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| source_dir().join("../shared/data/acasxu"));
    dir.join("nnet").is_dir().then_some(dir)
}

/// Layer sizes, the four normalisation rows, and (weights, biases) per layer.
type NNet = (Vec<usize>, [Vec<f64>; 4], Vec<(Vec<f64>, Vec<f64>)>);

/// Parses an NNet file independently of libvram (f64, as written).
fn parse_nnet(path: &std::path::Path) -> NNet {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().filter(|l| !l.starts_with("//")).map(|l| {
        l.split(',')
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().parse::<f64>().unwrap())
            .collect::<Vec<f64>>()
    });
    let header = lines.next().unwrap();
    let sizes: Vec<usize> = lines.next().unwrap().iter().map(|&v| v as usize).collect();
    lines.next();
    let norm = [
        lines.next().unwrap(),
        lines.next().unwrap(),
        lines.next().unwrap(),
        lines.next().unwrap(),
    ];
    let mut layers = Vec::new();
    for l in 0..header[0] as usize {
        let w: Vec<f64> = (0..sizes[l + 1])
            .flat_map(|_| lines.next().unwrap())
            .collect();
        let b: Vec<f64> = (0..sizes[l + 1])
            .map(|_| lines.next().unwrap()[0])
            .collect();
        layers.push((w, b));
    }
    (sizes, norm, layers)
}

fn evaluate(
    sizes: &[usize],
    norm: &[Vec<f64>; 4],
    layers: &[(Vec<f64>, Vec<f64>)],
    x: &[f64],
    f32_weights: bool,
) -> Vec<f64> {
    let mut v: Vec<f64> = (0..sizes[0])
        .map(|i| (x[i].clamp(norm[0][i], norm[1][i]) - norm[2][i]) / norm[3][i])
        .collect();
    for (k, (w, b)) in layers.iter().enumerate() {
        let r = |x: f64| if f32_weights { f64::from(x as f32) } else { x };
        let n = v.len();
        let mut next: Vec<f64> = (0..b.len())
            .map(|o| r(b[o]) + (0..n).map(|j| r(w[o * n + j]) * v[j]).sum::<f64>())
            .collect();
        if k + 1 < layers.len() {
            next.iter_mut().for_each(|y| *y = y.max(0.0));
        }
        v = next;
    }
    v
}

#[test]
fn acasxu_networks_load_and_match_direct_evaluation() {
    let Some(dir) = acasxu_dir() else {
        println!("SKIPPED acasxu: ../shared/data/acasxu not found (set VRAM_ACASXU_DIR)");
        return;
    };
    let ctx = Ctx::new();
    for name in [
        "ACASXU_experimental_v2a_1_1",
        "ACASXU_experimental_v2a_3_7",
        "ACASXU_experimental_v2a_5_9",
    ] {
        let path = dir.join(format!("nnet/{name}.nnet"));
        let cpath = CString::new(path.to_str().unwrap()).unwrap();
        let mut m = ptr::null_mut();
        assert_eq!(
            ibp_model_from_nnet(ctx.0, cpath.as_ptr(), &mut m),
            vram_status::VRAM_OK,
            "{}",
            last_error()
        );
        assert_eq!((ibp_model_input_size(m), ibp_model_output_size(m)), (5, 5));
        let (sizes, norm, layers) = parse_nnet(&path);
        let mut seed = 0x5eed_u64;
        for _ in 0..20 {
            // Physical inputs inside (and sometimes outside: clipping) the valid range.
            let x: Vec<f64> = (0..5)
                .map(|i| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let t = (seed >> 11) as f64 / (1u64 << 53) as f64;
                    norm[0][i] + (t * 1.2 - 0.1) * (norm[1][i] - norm[0][i])
                })
                .collect();
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let xd: Vec<f64> = xf.iter().map(|&v| f64::from(v)).collect();
            let (mut ol, mut oh) = ([0f32; 5], [0f32; 5]);
            assert_eq!(
                ibp_propagate(
                    m,
                    1,
                    xf.as_ptr(),
                    xf.as_ptr(),
                    ol.as_mut_ptr(),
                    oh.as_mut_ptr()
                ),
                vram_status::VRAM_OK
            );
            let with_f32 = evaluate(&sizes, &norm, &layers, &xd, true);
            let as_written = evaluate(&sizes, &norm, &layers, &xd, false);
            for o in 0..5 {
                let tol = 1e-9 * (1.0 + with_f32[o].abs());
                assert!(
                    f64::from(ol[o]) <= with_f32[o] + tol && f64::from(oh[o]) >= with_f32[o] - tol,
                    "{name} output {o}: {} not in [{}, {}]",
                    with_f32[o],
                    ol[o],
                    oh[o]
                );
                assert!(
                    (f64::from(oh[o]) - f64::from(ol[o])) < 1e-6 * (1.0 + with_f32[o].abs()),
                    "{name}: point bounds too wide: [{}, {}] around {} at {xf:?}",
                    ol[o],
                    oh[o],
                    with_f32[o]
                );
                assert!(
                    (as_written[o] - with_f32[o]).abs() < 1e-4 * (1.0 + as_written[o].abs()),
                    "{name}: f32 weights drift from the file"
                );
            }
        }
        let mut r = vram_verify_report::default();
        assert_eq!(ibp_model_verify(ctx.0, m, &mut r), vram_status::VRAM_OK);
        ibp_model_free(m);
    }
    let mut m = ptr::null_mut();
    expect(
        ibp_model_from_nnet(ctx.0, c"/nonexistent.nnet".as_ptr(), &mut m),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "path",
    );
    let bad = std::env::temp_dir().join(format!("vram-bad-{}.nnet", std::process::id()));
    std::fs::write(
        &bad,
        "// c\n2,2,1,3,\n2,3,1,\n0,\n0,0,\n1,1,\n0,0,0,\n1,1,1,\n1,x,\n",
    )
    .unwrap();
    let cbad = CString::new(bad.to_str().unwrap()).unwrap();
    expect(
        ibp_model_from_nnet(ctx.0, cbad.as_ptr(), &mut m),
        vram_status::VRAM_ERR_INVALID_ARGUMENT,
        "'x' in layer 0 weight row 0 is not a finite number",
    );
    std::fs::remove_file(bad).ok();
    assert!(m.is_null());
}
