//! A small description of test networks, a builder for them through the C ABI, and the exact
//! IBP reference: interval arithmetic over arbitrary-precision rationals, where every f32
//! weight and input is converted exactly.
#![allow(dead_code)]

use std::ptr;

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{Signed, Zero};
use vram::*;

#[derive(Clone, Debug)]
pub enum Layer {
    Linear {
        out: usize,
        w: Vec<f32>,
        b: Vec<f32>,
    },
    Conv {
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        w: Vec<f32>,
        b: Vec<f32>,
    },
    Relu,
    Leaky(f32),
    Flatten,
    /// Adds the output of node `other` (node 0 is the input).
    Add(usize),
    AvgPool {
        k: usize,
        stride: usize,
    },
    MaxPool {
        k: usize,
        stride: usize,
    },
    Sigmoid,
    Tanh,
    BatchNorm {
        gamma: Vec<f32>,
        beta: Vec<f32>,
        mean: Vec<f32>,
        var: Vec<f32>,
        eps: f64,
    },
}

#[derive(Clone, Debug)]
pub struct Net {
    pub input: Vec<u64>,
    pub layers: Vec<Layer>,
}

/// An MLP of random weights: linear layers of `dims`, ReLU between them (every other one a
/// LeakyReLU of 0.1 when `leaky`).
pub fn mlp(r: &mut crate::common::Rng, dims: &[usize], scale: f32, leaky: bool) -> Net {
    let mut layers = Vec::new();
    for k in 0..dims.len() - 1 {
        let (i, o) = (dims[k], dims[k + 1]);
        layers.push(Layer::Linear {
            out: o,
            w: r.vec(i * o, scale),
            b: r.vec(o, scale),
        });
        if k + 2 < dims.len() {
            layers.push(if leaky && k % 2 == 1 {
                Layer::Leaky(0.1)
            } else {
                Layer::Relu
            });
        }
    }
    Net {
        input: vec![dims[0] as u64],
        layers,
    }
}

/// Options of ibp_propagate_ex(): boxes in host memory, no spec, `method`.
pub fn propagate_options(method: ibp_method) -> ibp_propagate_options {
    ibp_propagate_options {
        struct_size: size_of::<ibp_propagate_options>() as u32,
        memory: 0,
        stream: ptr::null_mut(),
        spec_rows: 0,
        spec_c: ptr::null(),
        spec_d: ptr::null(),
        flags: 0,
        method: method as u32,
    }
}

/// ibp_propagate_ex() over host boxes (`lo`, `hi`: batch × input size), asserted to succeed:
/// the output (or spec) bounds.
pub fn propagate_boxes(
    m: *const ibp_model,
    o: &ibp_propagate_options,
    lo: &[f32],
    hi: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let (s, ol, oh) = propagate_status(m, o, lo, hi);
    assert_eq!(s, vram_status::VRAM_OK, "{}", crate::common::last_error());
    (ol, oh)
}

/// ibp_propagate_ex() over host boxes: its status, and the output buffers it wrote on success.
pub fn propagate_status(
    m: *const ibp_model,
    o: &ibp_propagate_options,
    lo: &[f32],
    hi: &[f32],
) -> (vram_status, Vec<f32>, Vec<f32>) {
    let batch = lo.len() / ibp_model_input_size(m);
    let rows = if o.spec_rows > 0 {
        o.spec_rows
    } else {
        ibp_model_output_size(m)
    };
    let (mut ol, mut oh) = (vec![0f32; rows * batch], vec![0f32; rows * batch]);
    let s = ibp_propagate_ex(
        m,
        batch,
        lo.as_ptr(),
        hi.as_ptr(),
        ol.as_mut_ptr(),
        oh.as_mut_ptr(),
        o,
    );
    (s, ol, oh)
}

/// Builds `net` through the C ABI on `ctx`.
pub fn build(ctx: *mut vram_ctx, name: &str, net: &Net) -> *mut ibp_model {
    let mut b = ptr::null_mut();
    let cname = std::ffi::CString::new(name).unwrap();
    assert_eq!(
        ibp_builder_new(
            ctx,
            cname.as_ptr(),
            net.input.as_ptr(),
            net.input.len(),
            &mut b
        ),
        vram_status::VRAM_OK
    );
    for l in &net.layers {
        let mut node = 0u32;
        let s = match l {
            Layer::Linear { out, w, b: bias } => ibp_builder_add_linear(
                b,
                IBP_PREV,
                *out as u64,
                w.as_ptr(),
                bias.as_ptr(),
                &mut node,
            ),
            Layer::Conv {
                cout,
                k,
                stride,
                pad,
                w,
                b: bias,
            } => {
                let p = ibp_conv2d_params {
                    struct_size: size_of::<ibp_conv2d_params>() as u32,
                    out_channels: *cout as u64,
                    kernel_h: *k as u64,
                    kernel_w: *k as u64,
                    stride_h: *stride as u64,
                    stride_w: *stride as u64,
                    pad_h: *pad as u64,
                    pad_w: *pad as u64,
                    dilation_h: 1,
                    dilation_w: 1,
                    groups: 1,
                };
                ibp_builder_add_conv2d(b, IBP_PREV, &p, w.as_ptr(), bias.as_ptr(), &mut node)
            }
            Layer::Relu => ibp_builder_add_relu(b, IBP_PREV, &mut node),
            Layer::Leaky(a) => ibp_builder_add_leaky_relu(b, IBP_PREV, *a, &mut node),
            Layer::Flatten => ibp_builder_add_flatten(b, IBP_PREV, &mut node),
            Layer::Add(o) => ibp_builder_add_add(b, IBP_PREV, *o as u32, &mut node),
            Layer::AvgPool { k, stride } | Layer::MaxPool { k, stride } => {
                let p = ibp_pool2d_params {
                    struct_size: size_of::<ibp_pool2d_params>() as u32,
                    kernel_h: *k as u64,
                    kernel_w: *k as u64,
                    stride_h: *stride as u64,
                    stride_w: *stride as u64,
                    pad_h: 0,
                    pad_w: 0,
                };
                if matches!(l, Layer::AvgPool { .. }) {
                    ibp_builder_add_avgpool2d(b, IBP_PREV, &p, &mut node)
                } else {
                    ibp_builder_add_maxpool2d(b, IBP_PREV, &p, &mut node)
                }
            }
            Layer::Sigmoid => ibp_builder_add_sigmoid(b, IBP_PREV, &mut node),
            Layer::Tanh => ibp_builder_add_tanh(b, IBP_PREV, &mut node),
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
            } => ibp_builder_add_batchnorm(
                b,
                IBP_PREV,
                gamma.as_ptr(),
                beta.as_ptr(),
                mean.as_ptr(),
                var.as_ptr(),
                *eps,
                &mut node,
            ),
        };
        assert_eq!(
            s,
            vram_status::VRAM_OK,
            "{l:?}: {}",
            crate::common::last_error()
        );
    }
    let mut m = ptr::null_mut();
    assert_eq!(
        ibp_builder_build(b, &mut m),
        vram_status::VRAM_OK,
        "{}",
        crate::common::last_error()
    );
    m
}

pub type Q = BigRational;

pub fn q(x: f32) -> Q {
    Q::from_float(x).expect("finite")
}

/// An approximation for messages and tolerances (never to decide soundness).
pub fn to_f64(x: &Q) -> f64 {
    use num_traits::ToPrimitive;
    x.to_f64().unwrap_or(f64::NAN)
}

/// Shapes of every node (node 0 = input), as the library computes them.
pub fn shapes(net: &Net) -> Vec<Vec<usize>> {
    let mut s = vec![net.input.iter().map(|&d| d as usize).collect::<Vec<_>>()];
    for l in &net.layers {
        let p = s.last().unwrap().clone();
        let next = match l {
            Layer::Linear { out, .. } => vec![*out],
            Layer::Conv {
                cout,
                k,
                stride,
                pad,
                ..
            } => {
                vec![
                    *cout,
                    (p[1] + 2 * pad - k) / stride + 1,
                    (p[2] + 2 * pad - k) / stride + 1,
                ]
            }
            Layer::AvgPool { k, stride } | Layer::MaxPool { k, stride } => {
                vec![p[0], (p[1] - k) / stride + 1, (p[2] - k) / stride + 1]
            }
            Layer::Flatten => vec![p.iter().product()],
            _ => p,
        };
        s.push(next);
    }
    s
}

/// Exact IBP bounds (rationals) of a piecewise-linear net for one box.
pub fn exact(net: &Net, lo: &[f32], hi: &[f32]) -> (Vec<Q>, Vec<Q>) {
    let shapes = shapes(net);
    let mut vals: Vec<(Vec<Q>, Vec<Q>)> = vec![(
        lo.iter().map(|&x| q(x)).collect(),
        hi.iter().map(|&x| q(x)).collect(),
    )];
    for (k, l) in net.layers.iter().enumerate() {
        let (xl, xu) = vals.last().unwrap().clone();
        let ps = &shapes[k];
        let os = &shapes[k + 1];
        let dot = |terms: &mut dyn Iterator<Item = (f32, usize)>, bias: f32| {
            let (mut a, mut b) = (q(bias), q(bias));
            for (w, j) in terms {
                let w = q(w);
                if w.is_positive() {
                    a += &w * &xl[j];
                    b += &w * &xu[j];
                } else {
                    a += &w * &xu[j];
                    b += &w * &xl[j];
                }
            }
            (a, b)
        };
        let out: (Vec<Q>, Vec<Q>) = match l {
            Layer::Linear { out, w, b } => {
                let n = xl.len();
                (0..*out)
                    .map(|o| dot(&mut (0..n).map(|j| (w[o * n + j], j)), b[o]))
                    .unzip()
            }
            Layer::Conv {
                cout,
                k: ks,
                stride,
                pad,
                w,
                b,
            } => {
                let (cin, h, wd) = (ps[0], ps[1], ps[2]);
                let (oh, ow) = (os[1], os[2]);
                let mut r = (Vec::new(), Vec::new());
                for co in 0..*cout {
                    for y in 0..oh {
                        for x in 0..ow {
                            let mut terms = Vec::new();
                            for ci in 0..cin {
                                for ky in 0..*ks {
                                    for kx in 0..*ks {
                                        let iy = (y * stride + ky) as isize - *pad as isize;
                                        let ix = (x * stride + kx) as isize - *pad as isize;
                                        if iy >= 0
                                            && ix >= 0
                                            && (iy as usize) < h
                                            && (ix as usize) < wd
                                        {
                                            terms.push((
                                                w[((co * cin + ci) * ks + ky) * ks + kx],
                                                (ci * h + iy as usize) * wd + ix as usize,
                                            ));
                                        }
                                    }
                                }
                            }
                            let (a, bb) = dot(&mut terms.into_iter(), b[co]);
                            r.0.push(a);
                            r.1.push(bb);
                        }
                    }
                }
                r
            }
            Layer::Relu => (
                xl.iter()
                    .map(|v| {
                        if v.is_negative() {
                            Q::zero()
                        } else {
                            v.clone()
                        }
                    })
                    .collect(),
                xu.iter()
                    .map(|v| {
                        if v.is_negative() {
                            Q::zero()
                        } else {
                            v.clone()
                        }
                    })
                    .collect(),
            ),
            Layer::Leaky(a) => {
                let a = q(*a);
                let f = |v: &Q| if v.is_negative() { &a * v } else { v.clone() };
                (xl.iter().map(f).collect(), xu.iter().map(f).collect())
            }
            Layer::Flatten => (xl, xu),
            Layer::Add(o) => {
                let (ol, ou) = &vals[*o];
                (
                    xl.iter().zip(ol).map(|(a, b)| a + b).collect(),
                    xu.iter().zip(ou).map(|(a, b)| a + b).collect(),
                )
            }
            Layer::AvgPool { k: ks, stride } | Layer::MaxPool { k: ks, stride } => {
                let (c, h, wd) = (ps[0], ps[1], ps[2]);
                let (oh, ow) = (os[1], os[2]);
                let max = matches!(l, Layer::MaxPool { .. });
                let mut r = (Vec::new(), Vec::new());
                for ch in 0..c {
                    for y in 0..oh {
                        for x in 0..ow {
                            let idx: Vec<usize> = (0..*ks)
                                .flat_map(|ky| {
                                    (0..*ks).map(move |kx| {
                                        (ch * h + y * stride + ky) * wd + x * stride + kx
                                    })
                                })
                                .collect();
                            if max {
                                r.0.push(idx.iter().map(|&i| xl[i].clone()).max().unwrap());
                                r.1.push(idx.iter().map(|&i| xu[i].clone()).max().unwrap());
                            } else {
                                let n = Q::from_integer(BigInt::from(idx.len()));
                                r.0.push(
                                    idx.iter()
                                        .map(|&i| xl[i].clone())
                                        .fold(Q::zero(), |a, b| a + b)
                                        / &n,
                                );
                                r.1.push(
                                    idx.iter()
                                        .map(|&i| xu[i].clone())
                                        .fold(Q::zero(), |a, b| a + b)
                                        / &n,
                                );
                            }
                        }
                    }
                }
                r
            }
            Layer::Sigmoid | Layer::Tanh | Layer::BatchNorm { .. } => {
                panic!("smooth activations and batch norm have no exact rational reference")
            }
        };
        vals.push(out);
    }
    vals.pop().unwrap()
}
