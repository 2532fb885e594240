//! ONNX import through the C ABI: networks written as ONNX must give exactly the bounds of the
//! same networks built layer by layer; the ACAS Xu ONNX files must compute what their NNet
//! twins compute; unsupported operators are named; mutated files never panic or leak.

mod common;
#[path = "common/ibp.rs"]
mod ibp;

use std::ffi::CString;
use std::ptr;

use common::*;
use ibp::{Layer, Net, build, shapes};
use prost::Message;
use vram::ibp::onnx::proto::*;
use vram::*;

fn dims(shape: &[u64]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

fn float_tensor(name: &str, shape: &[u64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims(shape),
        data_type: data_type::FLOAT,
        // Half the tensors as raw little-endian bytes, half as float_data: both encodings.
        raw_data: if name.len() % 2 == 0 {
            v.iter().flat_map(|x| x.to_le_bytes()).collect()
        } else {
            Vec::new()
        },
        float_data: if name.len() % 2 == 0 {
            Vec::new()
        } else {
            v.to_vec()
        },
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: v,
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn value_info(name: &str, shape: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorType {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension {
                            dim_value: (d > 0).then_some(d),
                            dim_param: (d <= 0).then(|| "batch".into()),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, input: &[i64], out: &str) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![value_info("v0", input)],
            output: vec![value_info(out, &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// `net` written as ONNX (batch dimension symbolic). Linear layers alternate between Gemm
/// (transB = 1) and MatMul + Add, so both paths are compared with the builder.
fn onnx_of(net: &Net) -> Vec<u8> {
    let shapes = shapes(net);
    let (mut nodes, mut inits) = (Vec::new(), Vec::new());
    for (k, l) in net.layers.iter().enumerate() {
        let (x, y) = (format!("v{k}"), format!("v{}", k + 1));
        let p = |t: &str| format!("p{k}_{t}");
        let cin = shapes[k].first().copied().unwrap_or(1) as u64;
        let fan_in: usize = shapes[k].iter().product();
        match l {
            Layer::Linear { out, w, b } if k % 2 == 0 => {
                inits.push(float_tensor(&p("w"), &[*out as u64, fan_in as u64], w));
                inits.push(float_tensor(&p("b"), &[*out as u64], b));
                nodes.push(node(
                    "Gemm",
                    &[&x, &p("w"), &p("b")],
                    &y,
                    vec![attr_int("transB", 1)],
                ));
            }
            Layer::Linear { out, w, b } => {
                let mut wt = vec![0f32; w.len()];
                for o in 0..*out {
                    for i in 0..fan_in {
                        wt[i * out + o] = w[o * fan_in + i];
                    }
                }
                inits.push(float_tensor(&p("w"), &[fan_in as u64, *out as u64], &wt));
                inits.push(float_tensor(&p("b"), &[1, *out as u64], b));
                nodes.push(node("MatMul", &[&x, &p("w")], &p("mm"), vec![]));
                nodes.push(node("Add", &[&p("mm"), &p("b")], &y, vec![]));
            }
            Layer::Conv {
                cout,
                k: ks,
                stride,
                pad,
                w,
                b,
            } => {
                let ks = *ks as u64;
                inits.push(float_tensor(&p("w"), &[*cout as u64, cin, ks, ks], w));
                inits.push(float_tensor(&p("b"), &[*cout as u64], b));
                let (s, pd) = (*stride as i64, *pad as i64);
                nodes.push(node(
                    "Conv",
                    &[&x, &p("w"), &p("b")],
                    &y,
                    vec![
                        attr_ints("kernel_shape", &[ks as i64, ks as i64]),
                        attr_ints("strides", &[s, s]),
                        attr_ints("pads", &[pd, pd, pd, pd]),
                    ],
                ));
            }
            Layer::Relu => nodes.push(node("Relu", &[&x], &y, vec![])),
            Layer::Leaky(a) => {
                nodes.push(node("LeakyRelu", &[&x], &y, vec![attr_float("alpha", *a)]))
            }
            Layer::Sigmoid => nodes.push(node("Sigmoid", &[&x], &y, vec![])),
            Layer::Tanh => nodes.push(node("Tanh", &[&x], &y, vec![])),
            Layer::Flatten => nodes.push(node("Flatten", &[&x], &y, vec![attr_int("axis", 1)])),
            Layer::Add(o) => nodes.push(node("Add", &[&x, &format!("v{o}")], &y, vec![])),
            Layer::AvgPool { k: ks, stride } | Layer::MaxPool { k: ks, stride } => {
                let op = if matches!(l, Layer::MaxPool { .. }) {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                nodes.push(node(
                    op,
                    &[&x],
                    &y,
                    vec![
                        attr_ints("kernel_shape", &[*ks as i64, *ks as i64]),
                        attr_ints("strides", &[*stride as i64, *stride as i64]),
                    ],
                ));
            }
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
            } => {
                let c = [gamma.len() as u64];
                for (t, v) in [("g", gamma), ("b", beta), ("m", mean), ("v", var)] {
                    inits.push(float_tensor(&p(t), &c, v));
                }
                nodes.push(node(
                    "BatchNormalization",
                    &[&x, &p("g"), &p("b"), &p("m"), &p("v")],
                    &y,
                    vec![attr_float("epsilon", *eps as f32)],
                ));
            }
        }
    }
    let mut input = vec![-1];
    input.extend(net.input.iter().map(|&d| d as i64));
    model(nodes, inits, &input, &format!("v{}", net.layers.len()))
}

fn write_temp(tag: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("vram-onnx-{tag}-{}.onnx", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn cpath(p: &std::path::Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn load(ctx: &Ctx, p: &std::path::Path) -> (vram_status, *mut ibp_model) {
    let mut m = ptr::null_mut();
    let s = ibp_model_from_onnx(ctx.0, cpath(p).as_ptr(), ptr::null(), &mut m);
    (s, m)
}

fn bounds(m: *const ibp_model, lo: &[f32], hi: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let o = ibp::propagate_options(ibp_method::IBP_METHOD_INTERVAL);
    ibp::propagate_boxes(m, &o, lo, hi)
}

fn test_nets(rng: &mut Rng) -> Vec<Net> {
    let conv = Net {
        input: vec![2, 6, 6],
        layers: vec![
            Layer::Conv {
                cout: 3,
                k: 3,
                stride: 1,
                pad: 1,
                w: rng.vec(3 * 2 * 9, 0.5),
                b: rng.vec(3, 0.1),
            },
            Layer::BatchNorm {
                gamma: rng.vec(3, 1.0),
                beta: rng.vec(3, 0.2),
                mean: rng.vec(3, 0.2),
                var: rng.vec(3, 1.0).iter().map(|v| v.abs() + 0.5).collect(),
                eps: f64::from(1e-5f32),
            },
            Layer::Relu,
            Layer::MaxPool { k: 2, stride: 2 },
            Layer::AvgPool { k: 2, stride: 1 },
            Layer::Flatten,
            Layer::Linear {
                out: 6,
                w: rng.vec(6 * 12, 0.4),
                b: rng.vec(6, 0.1),
            },
            Layer::Leaky(0.125),
            Layer::Linear {
                out: 3,
                w: rng.vec(18, 0.4),
                b: rng.vec(3, 0.1),
            },
            Layer::Sigmoid,
        ],
    };
    let residual = Net {
        input: vec![4],
        layers: vec![
            Layer::Linear {
                out: 4,
                w: rng.vec(16, 0.7),
                b: rng.vec(4, 0.1),
            },
            Layer::Relu,
            Layer::Add(1),
            Layer::Tanh,
            Layer::Linear {
                out: 2,
                w: rng.vec(8, 0.7),
                b: rng.vec(2, 0.1),
            },
        ],
    };
    vec![conv, residual]
}

#[test]
fn onnx_networks_bound_exactly_like_built_ones() {
    let ctx = Ctx::new();
    let mut rng = Rng(0x0dd5_eed5);
    for (i, net) in test_nets(&mut rng).iter().enumerate() {
        let path = write_temp(&format!("same{i}"), &onnx_of(net));
        let (s, from_onnx) = load(&ctx, &path);
        assert_eq!(s, vram_status::VRAM_OK, "net {i}: {}", last_error());
        let built = build(ctx.0, &format!("built{i}"), net);
        let n: usize = net.input.iter().product::<u64>() as usize;
        assert_eq!(ibp_model_input_size(from_onnx), n);
        assert_eq!(
            ibp_model_output_size(from_onnx),
            ibp_model_output_size(built)
        );
        let batch = 8;
        let mid = rng.vec(n * batch, 1.0);
        let lo: Vec<f32> = mid.iter().map(|m| m - 0.05).collect();
        let hi: Vec<f32> = mid.iter().map(|m| m + 0.05).collect();
        assert_eq!(
            bounds(from_onnx, &lo, &hi),
            bounds(built, &lo, &hi),
            "net {i}"
        );
        ibp_model_free(from_onnx);
        ibp_model_free(built);
        std::fs::remove_file(path).unwrap();
    }
    assert_eq!(ctx.used(), 0);
}

/// Sub and Div by constants (input normalisation), a scalar Add, Reshape and Identity.
#[test]
fn normalisation_constants_are_applied_soundly() {
    let ctx = Ctx::new();
    let w = [0.5f32, -1.0, 2.0, 0.25, 1.0, 1.0];
    let nodes = vec![
        node("Sub", &["v0", "mean"], "s", vec![]),
        node("Div", &["s", "std"], "d", vec![]),
        node("Identity", &["d"], "i", vec![]),
        node("Reshape", &["i", "flat"], "r", vec![]),
        node("MatMul", &["r", "w"], "mm", vec![]),
        node("Add", &["mm", "three"], "out", vec![]),
    ];
    let flat = TensorProto {
        name: "flat".into(),
        dims: vec![2],
        data_type: data_type::INT64,
        int64_data: vec![1, -1],
        ..Default::default()
    };
    let inits = vec![
        float_tensor("mean", &[3], &[0.1, 0.2, 0.3]),
        float_tensor("std", &[1], &[3.0]),
        float_tensor("w", &[3, 2], &w),
        float_tensor("three", &[], &[3.0]),
        flat,
    ];
    let path = write_temp("norm", &model(nodes, inits, &[1, 1, 3], "out"));
    let (s, m) = load(&ctx, &path);
    assert_eq!(s, vram_status::VRAM_OK, "{}", last_error());
    let x = [0.7f32, -0.4, 1.9];
    let (ol, oh) = bounds(m, &x, &x);
    // y_o = Σ_i (x_i − mean_i) / 3 · w[i][o] + 3, in f64 (close to exact here).
    for o in 0..2 {
        let mean = [0.1f32, 0.2, 0.3];
        let y: f64 = (0..3)
            .map(|i| (f64::from(x[i]) - f64::from(mean[i])) / 3.0 * f64::from(w[i * 2 + o]))
            .sum::<f64>()
            + 3.0;
        assert!(
            f64::from(ol[o]) <= y && y <= f64::from(oh[o]),
            "{o}: {y} ∉ [{}, {}]",
            ol[o],
            oh[o]
        );
        assert!(oh[o] - ol[o] < 1e-5);
    }
    ibp_model_free(m);
    std::fs::remove_file(path).unwrap();
    assert_eq!(ctx.used(), 0);
}

#[test]
fn unsupported_operators_are_named_and_nothing_stays_sealed() {
    let ctx = Ctx::new();
    let cases: Vec<(Vec<NodeProto>, &str)> = vec![
        (
            vec![
                node("Gemm", &["v0", "w"], "g", vec![attr_int("transB", 1)]),
                node("Softmax", &["g"], "out", vec![]),
            ],
            "node 1 (\"Softmax_out\", Softmax)",
        ),
        (
            vec![node(
                "Gemm",
                &["v0", "w"],
                "out",
                vec![attr_float("alpha", 2.0)],
            )],
            "alpha",
        ),
        (
            vec![
                node("Gemm", &["v0", "w"], "g", vec![]),
                node("Mul", &["g", "w"], "out", vec![]),
            ],
            "Mul",
        ),
    ];
    for (nodes, named) in cases {
        let inits = vec![float_tensor("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0])];
        let path = write_temp("unsupported", &model(nodes, inits, &[1, 2], "out"));
        let (s, m) = load(&ctx, &path);
        assert_eq!(s, vram_status::VRAM_ERR_UNSUPPORTED, "{}", last_error());
        assert!(m.is_null());
        assert!(last_error().contains(named), "{named}: {}", last_error());
        assert_eq!(ctx.used(), 0, "a refused model left shards sealed");
        std::fs::remove_file(path).unwrap();
    }
    // Not an ONNX file at all, and a missing file: invalid argument.
    let path = write_temp("junk", b"\xff\xff\xff\xff not protobuf");
    assert_eq!(load(&ctx, &path).0, vram_status::VRAM_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("onnx"), "{}", last_error());
    std::fs::remove_file(path).unwrap();
    let mut m = ptr::null_mut();
    assert_eq!(
        ibp_model_from_onnx(ctx.0, c"/nonexistent.onnx".as_ptr(), ptr::null(), &mut m),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        ibp_model_from_onnx(ptr::null_mut(), c"/x".as_ptr(), ptr::null(), &mut m),
        vram_status::VRAM_ERR_NULL_ARGUMENT
    );
    let bad_size = ibp_onnx_options {
        struct_size: 3,
        flags: 0,
        model_name: ptr::null(),
    };
    assert_eq!(
        ibp_model_from_onnx(ctx.0, c"/x".as_ptr(), &bad_size, &mut m),
        vram_status::VRAM_ERR_INVALID_ARGUMENT
    );
    assert!(m.is_null());
}

/// The NNet normalisation rows (min, max, mean, range) of an ACAS Xu file.
fn nnet_norm(path: &std::path::Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with("//"))
        .skip(3)
        .take(4)
        .map(|l| {
            l.split(',')
                .filter(|t| !t.trim().is_empty())
                .map(|t| t.trim().parse().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn acasxu_onnx_computes_what_the_nnet_file_computes() {
    let Some(dir) = acasxu_onnx_dir() else {
        println!("SKIPPED acasxu onnx: ../shared/data/acasxu not found (set VRAM_ACASXU_DIR)");
        return;
    };
    let ctx = Ctx::new();
    let mut rng = Rng(0xaca5);
    for name in [
        "ACASXU_experimental_v2a_1_1",
        "ACASXU_experimental_v2a_2_9",
        "ACASXU_experimental_v2a_5_3",
    ] {
        let (s, onnx) = load(&ctx, &dir.join(format!("onnx/{name}.onnx")));
        assert_eq!(s, vram_status::VRAM_OK, "{name}: {}", last_error());
        let nnet_path = dir.join(format!("nnet/{name}.nnet"));
        let mut nnet = ptr::null_mut();
        assert_eq!(
            ibp_model_from_nnet(ctx.0, cpath(&nnet_path).as_ptr(), &mut nnet),
            vram_status::VRAM_OK
        );
        let norm = nnet_norm(&nnet_path);
        assert_eq!(
            (ibp_model_input_size(onnx), ibp_model_output_size(onnx)),
            (5, 5)
        );
        for _ in 0..50 {
            // A physical point inside the file's range; the ONNX network takes it normalised.
            let phys: Vec<f32> = (0..5)
                .map(|i| {
                    let t = f64::from(rng.unit()) * 0.5 + 0.5;
                    (norm[0][i] + t * (norm[1][i] - norm[0][i])) as f32
                })
                .collect();
            let normed: Vec<f32> = (0..5)
                .map(|i| ((f64::from(phys[i]) - norm[2][i]) / norm[3][i]) as f32)
                .collect();
            let (nl, nh) = bounds(nnet, &phys, &phys);
            let (ol, oh) = bounds(onnx, &normed, &normed);
            for o in 0..5 {
                let (a, b) = ((nl[o] + nh[o]) / 2.0, (ol[o] + oh[o]) / 2.0);
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                    "{name} output {o}: nnet {a} onnx {b}"
                );
                assert!(
                    oh[o] - ol[o] <= 1e-5 * (1.0 + b.abs()),
                    "point bounds too wide"
                );
            }
        }
        ibp_model_free(onnx);
        ibp_model_free(nnet);
    }
    assert_eq!(ctx.used(), 0);
}

/// Seeded mutations of valid models (and of an ACAS Xu file when present): each loads or is
/// refused with a clear status; none panics, and nothing stays sealed.
#[test]
fn mutated_onnx_files_never_panic_or_leak() {
    let ctx = Ctx::new();
    let mut rng = Rng(0xf022_0bad_u64);
    let mut bases: Vec<Vec<u8>> = test_nets(&mut rng).iter().map(onnx_of).collect();
    if let Some(dir) = acasxu_onnx_dir() {
        bases.push(std::fs::read(dir.join("onnx/ACASXU_experimental_v2a_1_1.onnx")).unwrap());
    }
    let runs: usize = std::env::var("VRAM_FUZZ_ONNX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let path = std::env::temp_dir().join(format!("vram-onnx-fuzz-{}.onnx", std::process::id()));
    let (mut loaded, mut refused) = (0, 0);
    for run in 0..runs {
        let mut b = bases[run % bases.len()].clone();
        for _ in 0..1 + rng.index(4) {
            let at = rng.index(b.len());
            match rng.index(4) {
                0 => b[at] ^= 1 << rng.index(8),
                1 => b[at] = rng.next() as u8,
                2 => b.truncate(at),
                _ => {
                    let len = rng.index(16).min(b.len() - at);
                    let piece = b[at..at + len].to_vec();
                    let to = rng.index(b.len());
                    b.splice(to..to, piece);
                }
            }
            if b.is_empty() {
                b.push(0);
            }
        }
        std::fs::write(&path, &b).unwrap();
        let (s, m) = load(&ctx, &path);
        match s {
            vram_status::VRAM_OK => {
                loaded += 1;
                ibp_model_free(m);
            }
            vram_status::VRAM_ERR_INVALID_ARGUMENT
            | vram_status::VRAM_ERR_UNSUPPORTED
            | vram_status::VRAM_ERR_OUT_OF_MEMORY => {
                refused += 1;
                assert!(m.is_null());
            }
            other => panic!("run {run}: {other:?}: {}", last_error()),
        }
        assert_eq!(ctx.used(), 0, "run {run} left shards sealed");
    }
    std::fs::remove_file(&path).ok();
    println!("{runs} mutated models: {loaded} loaded, {refused} refused");
    assert!(refused > 0);
}
