//! Constant tensors (initializers and `Constant` nodes) and node attributes, checked.

use super::proto::{AttributeProto, NodeProto, TensorProto, attribute_type, data_type};
use super::unsupported;
use crate::error::{Result, VramError};
use crate::ibp::limits::product;

/// A constant's values, in the precision the file stores them.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dims: Vec<u64>,
    pub data: Data,
}

fn bad(what: &str, reason: impl std::fmt::Display) -> VramError {
    VramError::invalid("path", format!("onnx: {what}: {reason}"))
}

/// Values from `raw_data` (little-endian, `width` bytes each) or from the typed field.
fn values<T: Copy, const W: usize>(
    t: &TensorProto,
    typed: &[T],
    n: usize,
    from_le: fn([u8; W]) -> T,
    what: &str,
) -> Result<Vec<T>> {
    if !t.raw_data.is_empty() {
        if t.raw_data.len() != n.saturating_mul(W) {
            return Err(bad(
                what,
                format!(
                    "raw_data holds {} bytes, the dims need {}",
                    t.raw_data.len(),
                    n.saturating_mul(W)
                ),
            ));
        }
        let mut out = crate::fallible::try_with_capacity(n, "onnx tensor")?;
        out.extend(
            t.raw_data
                .chunks_exact(W)
                .filter_map(|c| <[u8; W]>::try_from(c).ok())
                .map(from_le),
        );
        return Ok(out);
    }
    if typed.len() != n {
        return Err(bad(
            what,
            format!("holds {} values, the dims need {n}", typed.len()),
        ));
    }
    Ok(typed.to_vec())
}

impl Tensor {
    pub fn from_proto(t: &TensorProto, what: &str) -> Result<Self> {
        if t.data_location != 0 || !t.external_data.is_empty() {
            return Err(unsupported(
                what,
                "external data (weights must be inside the .onnx file)",
            ));
        }
        if t.segment.is_some() {
            return Err(unsupported(what, "a segmented tensor"));
        }
        let mut dims = Vec::with_capacity(t.dims.len().min(8));
        for &d in &t.dims {
            let d = u64::try_from(d).map_err(|_| bad(what, format!("dimension {d} < 0")))?;
            dims.push(d);
        }
        // The values are checked against this count before anything is allocated for them, so
        // a tensor can be no larger than the file that holds it.
        let n = usize::try_from(product(&dims, "onnx tensor")?)
            .map_err(|_| bad(what, "too many elements"))?;
        let data = match t.data_type {
            data_type::FLOAT => Data::F32(values(t, &t.float_data, n, f32::from_le_bytes, what)?),
            data_type::DOUBLE => Data::F64(values(t, &t.double_data, n, f64::from_le_bytes, what)?),
            data_type::INT64 => Data::I64(values(t, &t.int64_data, n, i64::from_le_bytes, what)?),
            other => {
                return Err(unsupported(
                    what,
                    format!("element type {other} (float, double and int64 are read)"),
                ));
            }
        };
        Ok(Self { dims, data })
    }

    /// Float weights, exactly: float32 as is, float64 only when every value is a float32.
    pub fn f32s(&self, what: &str) -> Result<Vec<f32>> {
        let v = match &self.data {
            Data::F32(v) => v.clone(),
            Data::F64(v) => {
                let out: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                if out.iter().zip(v).any(|(&f, &d)| f64::from(f) != d) {
                    return Err(unsupported(
                        what,
                        "float64 weights that are not float32 values (the network's weights are float32)",
                    ));
                }
                out
            }
            Data::I64(_) => return Err(bad(what, "int64 where float weights are expected")),
        };
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(what, format!("element {i} is not finite")));
        }
        Ok(v)
    }

    /// Float constants as f64 (exact for both float widths).
    pub fn f64s(&self, what: &str) -> Result<Vec<f64>> {
        let v: Vec<f64> = match &self.data {
            Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::F64(v) => v.clone(),
            Data::I64(_) => return Err(bad(what, "int64 where a float constant is expected")),
        };
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(what, format!("element {i} is not finite")));
        }
        Ok(v)
    }

    pub fn i64s(&self, what: &str) -> Result<&[i64]> {
        match &self.data {
            Data::I64(v) => Ok(v),
            _ => Err(bad(what, "a shape must be int64")),
        }
    }
}

/// A node's attributes, looked up by name with their ONNX defaults.
pub struct Attrs<'a> {
    node: &'a NodeProto,
    what: String,
}

impl<'a> Attrs<'a> {
    pub fn new(node: &'a NodeProto, what: String) -> Result<Self> {
        if let Some(a) = node.attribute.iter().find(|a| !a.ref_attr_name.is_empty()) {
            return Err(unsupported(
                &what,
                format!("attribute {:?} refers to a function's attribute", a.name),
            ));
        }
        Ok(Self { node, what })
    }

    fn get(&self, name: &str, ty: i32) -> Result<Option<&'a AttributeProto>> {
        match self.node.attribute.iter().find(|a| a.name == name) {
            Some(a) if a.r#type == ty => Ok(Some(a)),
            Some(a) => Err(bad(
                &self.what,
                format!("attribute {name:?} has type {}, expected {ty}", a.r#type),
            )),
            None => Ok(None),
        }
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self
            .get(name, attribute_type::INT)?
            .map_or(default, |a| a.i))
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self
            .get(name, attribute_type::FLOAT)?
            .map_or(default, |a| a.f))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .get(name, attribute_type::INTS)?
            .map(|a| a.ints.clone()))
    }

    pub fn string(&self, name: &str) -> Result<Option<&'a [u8]>> {
        Ok(self
            .get(name, attribute_type::STRING)?
            .map(|a| a.s.as_slice()))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>> {
        Ok(self
            .get(name, attribute_type::TENSOR)?
            .and_then(|a| a.t.as_ref()))
    }

    /// Refuses attributes the importer does not know for this operator (they would change
    /// its meaning).
    pub fn only(&self, known: &[&str]) -> Result<()> {
        match self
            .node
            .attribute
            .iter()
            .find(|a| !known.contains(&a.name.as_str()))
        {
            Some(a) => Err(unsupported(&self.what, format!("attribute {:?}", a.name))),
            None => Ok(()),
        }
    }

    /// A pair of non-negative integers (strides, dilations), `default` when absent.
    pub fn pair(&self, name: &str, default: u64) -> Result<[u64; 2]> {
        match self.ints(name)? {
            None => Ok([default; 2]),
            Some(v) => match v[..] {
                [a, b] if a >= 0 && b >= 0 => Ok([a as u64, b as u64]),
                _ => Err(unsupported(
                    &self.what,
                    format!("{name} {v:?} (two non-negative values, 2-D only)"),
                )),
            },
        }
    }

    /// Symmetric 2-D padding `[top, left, bottom, right]` as `[h, w]`; `auto_pad` must be
    /// NOTSET or VALID.
    pub fn pads(&self) -> Result<[u64; 2]> {
        match self.string("auto_pad")? {
            None | Some(b"NOTSET") | Some(b"VALID") => {}
            Some(other) => {
                return Err(unsupported(
                    &self.what,
                    format!("auto_pad {:?}", String::from_utf8_lossy(other)),
                ));
            }
        }
        match self.ints("pads")? {
            None => Ok([0, 0]),
            Some(v) => match v[..] {
                [t, l, b, r] if t == b && l == r && t >= 0 && l >= 0 => Ok([t as u64, l as u64]),
                _ => Err(unsupported(
                    &self.what,
                    format!("pads {v:?} (symmetric, non-negative, 2-D only)"),
                )),
            },
        }
    }
}
