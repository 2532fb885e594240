//! A specification `C·y + d`: the caller asks for bounds on these linear combinations of the
//! network's outputs instead of the outputs themselves.

/// `rows × outputs` matrix C (row-major) and `rows` offsets d (all zero when absent).
#[derive(Debug, Clone)]
pub struct Spec {
    pub rows: usize,
    pub c: Vec<f32>,
    pub d: Vec<f32>,
}
