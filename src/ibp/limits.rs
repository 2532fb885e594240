//! The limits on a network, and the checked shape arithmetic every builder call goes through.
//!
//! Everything a propagation computes is sized and indexed from the shapes accepted here, so
//! these checks are what let `ibp_propagate` index without overflow and bound its own cost: a
//! call's work is at most `batch × Σ node work`, and each node's work is capped below.

use crate::error::{Result, VramError};

/// Largest tensor a node may produce (elements per batch item): keeps every index in u32
/// range for the GPU kernels and every buffer allocation sane.
pub const MAX_NODE_SIZE: u64 = 1 << 28;
/// Most nodes in one network (the input included).
pub const MAX_NODES: usize = 1 << 16;
/// Largest kernel, stride, padding or dilation of a convolution or pooling window.
pub const MAX_WINDOW_PARAM: u64 = 4096;
/// Most multiply-adds (or window taps) one node may cost per batch item.
pub const MAX_NODE_WORK: u64 = 1 << 32;

/// The product of `dims`, or `InvalidArgument` naming `what` when it overflows.
pub fn product(dims: &[u64], what: &str) -> Result<u64> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| VramError::invalid(what, format!("the product of {dims:?} overflows")))
}

/// Checks that a tensor shape has between 1 and [`MAX_NODE_SIZE`] elements.
pub fn check_size(shape: &[u64], what: &str) -> Result<u64> {
    let n = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .unwrap_or(u64::MAX);
    if n == 0 || n > MAX_NODE_SIZE {
        return Err(VramError::invalid(
            what,
            format!("shape {shape:?} has {n} elements; must be between 1 and {MAX_NODE_SIZE}"),
        ));
    }
    Ok(n)
}

/// Checks one node's cost per batch item against [`MAX_NODE_WORK`].
pub fn check_work(factors: &[u64], what: &str) -> Result<()> {
    let work = factors
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .unwrap_or(u64::MAX);
    if work > MAX_NODE_WORK {
        return Err(VramError::invalid(
            what,
            format!(
                "the layer would cost {work} multiply-adds per batch item; the limit is {MAX_NODE_WORK}"
            ),
        ));
    }
    Ok(())
}

/// One axis of a convolution or pooling window.
#[derive(Debug, Clone, Copy)]
pub struct Axis {
    pub kernel: u64,
    pub stride: u64,
    pub padding: u64,
    pub dilation: u64,
}

/// The output extent of a window along one axis of an `input`-long dimension. Every
/// parameter must be within [`MAX_WINDOW_PARAM`] (kernel, stride and dilation at least 1), and
/// the dilated window must fit the padded input.
pub fn out_extent(input: u64, axis: Axis, what: &str) -> Result<u64> {
    for (name, v, min) in [
        ("kernel", axis.kernel, 1),
        ("stride", axis.stride, 1),
        ("padding", axis.padding, 0),
        ("dilation", axis.dilation, 1),
    ] {
        if v < min || v > MAX_WINDOW_PARAM {
            return Err(VramError::invalid(
                what,
                format!("{name} {v} is out of range ({min} to {MAX_WINDOW_PARAM})"),
            ));
        }
    }
    // Within the limits above none of this can overflow (all factors < 2^29).
    let span = axis.dilation * (axis.kernel - 1) + 1;
    let padded = input + 2 * axis.padding;
    if padded < span {
        return Err(VramError::invalid(
            what,
            format!(
                "window of {span} does not fit an input of {input} with padding {}",
                axis.padding
            ),
        ));
    }
    Ok((padded - span) / axis.stride + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(kernel: u64, stride: u64, padding: u64, dilation: u64) -> Axis {
        Axis {
            kernel,
            stride,
            padding,
            dilation,
        }
    }

    #[test]
    fn extents_and_refusals() {
        assert_eq!(out_extent(32, axis(3, 1, 1, 1), "h").unwrap(), 32);
        assert_eq!(out_extent(32, axis(2, 2, 0, 1), "h").unwrap(), 16);
        assert_eq!(out_extent(7, axis(3, 1, 0, 2), "h").unwrap(), 3);
        for bad in [
            axis(0, 1, 0, 1),
            axis(3, 0, 0, 1),
            axis(3, 1, 0, 0),
            axis(1 << 32, 1, 1 << 31, 1),
            axis(3, 1, 1 << 63, 1),
            axis(2, 1, 0, 1 << 63),
            axis(u64::MAX, u64::MAX, u64::MAX, u64::MAX),
            axis(40, 1, 0, 1),
        ] {
            assert!(out_extent(32, bad, "h").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_and_work() {
        assert_eq!(check_size(&[3, 32, 32], "s").unwrap(), 3072);
        assert!(check_size(&[0], "s").is_err());
        assert!(check_size(&[1 << 32, 1 << 32], "s").is_err());
        assert!(check_size(&[1 << 29], "s").is_err());
        assert!(check_work(&[1 << 16, 1 << 16], "w").is_ok());
        assert!(check_work(&[1 << 16, 1 << 17], "w").is_err());
        assert!(check_work(&[u64::MAX, 2], "w").is_err());
        assert!(product(&[u64::MAX, 2], "p").is_err());
    }
}
