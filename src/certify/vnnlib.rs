//! VNN-LIB 1.0, the subset VNN-COMP benchmarks use: `declare-const` of `X_i` / `Y_j` reals,
//! and `assert`s of comparisons (`<=`, `>=`) between linear terms, combined with `and` / `or`.
//!
//! A property says when the network is *unsafe*: it is violated if some input satisfying the
//! input constraints gives an output satisfying the output constraints. The parsed property is
//! normalised to cases (the disjunctive normal form of all asserts together): each case is an
//! input box and a conjunction of linear constraints `Σ c_j · Y_j ≤ d` on the outputs.
//!
//! Constants are never rounded the wrong way: every decimal literal becomes the tightest f64
//! interval containing it (a point when the decimal is exactly a double), and its text is kept
//! for exact checks. Box bounds are taken outward (lower end of a lower bound, upper end of an
//! upper bound), so a verdict of "holds" over the boxes holds over the property's real region.
//!
//! Anything outside the subset is refused with its line and column.

use crate::error::{ErrorKind, Result, VramError};

/// At most this many cases after distributing `or` over `and` (VNN-COMP files have at most a
/// few hundred): a bound on the work a file can ask for.
pub const MAX_CASES: usize = 1 << 16;
/// At most this many declared variables, and bytes of input.
pub const MAX_VARS: usize = 1 << 20;
pub const MAX_BYTES: usize = 64 << 20;
/// Nesting deeper than this is refused (the parser recurses).
const MAX_DEPTH: usize = 64;
/// At most this many comparisons summed over all cases, and input bounds (cases × inputs):
/// what the normal form may hold in memory.
const MAX_CASE_ATOMS: usize = 1 << 22;
/// Longest token (a name or a decimal literal).
const MAX_TOKEN: usize = 1100;

/// A decimal constant: the tightest f64 interval holding it, and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    pub lo: f64,
    pub hi: f64,
    pub text: String,
}

impl Constant {
    /// Parses a decimal literal (`-0.5`, `3.991125645861615`, `12`, `1e-3`).
    fn parse(text: &str) -> Option<Self> {
        let ok = text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
        if !ok || !text.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        let x: f64 = text.parse().ok()?;
        if !x.is_finite() {
            return None;
        }
        let (lo, hi) = if exactly(text, x) {
            (x, x)
        } else {
            (x.next_down(), x.next_up())
        };
        Some(Self {
            lo,
            hi,
            text: text.to_string(),
        })
    }

    fn point(x: f64) -> Self {
        Self {
            lo: x,
            hi: x,
            text: format!("{x}"),
        }
    }

    fn neg(&self) -> Self {
        let text = match self.text.strip_prefix('-') {
            Some(t) => t.to_string(),
            None => format!("-{}", self.text),
        };
        Self {
            lo: -self.hi,
            hi: -self.lo,
            text,
        }
    }
}

/// Whether the decimal `text` is exactly the double `x`: `x`'s exact decimal expansion (at
/// most 1074 fractional digits) equals the literal, trailing zeros aside. Exponent forms are
/// taken as inexact, which only widens their interval by one ulp.
fn exactly(text: &str, x: f64) -> bool {
    if text.contains(['e', 'E']) {
        return false;
    }
    // x's exact decimal expansion has as many fractional digits as x has fractional binary
    // digits: more than the literal's, and they cannot be equal (no long formatting needed).
    let frac_len = text
        .split_once('.')
        .map_or(0, |(_, f)| f.trim_end_matches('0').len());
    if fractional_bits(x) > frac_len {
        return false;
    }
    let norm = |s: &str| -> String {
        let s = s.trim_start_matches(['+', '-']).trim_start_matches('0');
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    norm(text) == norm(&format!("{:.1100}", x.abs()))
}

/// Binary digits after the point in `x`'s exact value (0 for integers).
fn fractional_bits(x: f64) -> usize {
    let bits = x.to_bits();
    let (mantissa, exp) = match (bits >> 52) & 0x7ff {
        0 => (bits & ((1 << 52) - 1), -1074i64),
        e => ((bits & ((1 << 52) - 1)) | (1 << 52), e as i64 - 1075),
    };
    if mantissa == 0 {
        return 0;
    }
    let exp = exp + i64::from(mantissa.trailing_zeros());
    usize::try_from(-exp).unwrap_or(0)
}

/// A variable of the property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Var {
    Input(usize),
    Output(usize),
}

/// `Σ coeff · var + constant`, with interval coefficients.
#[derive(Debug, Clone, PartialEq)]
struct Linear {
    /// One coefficient per variable (a map, so long sums merge in O(n log n)).
    terms: std::collections::BTreeMap<Var, Constant>,
    constant: Constant,
}

/// One constraint on the outputs: `Σ c_j · Y_j ≤ d` with the coefficient and the bound kept
/// as intervals (a sound check takes the side of each that favours satisfying it).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConstraint {
    pub coeffs: Vec<(usize, Constant)>,
    pub bound: Constant,
}

/// `[lo, hi]` of a product of two intervals, each end one ulp outward (a product rounded to
/// nearest is within half an ulp); 0 · ∞ and other undefined ends give the whole line.
fn mul_bounds(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    if (a.0 == 0.0 && a.1 == 0.0) || (b.0 == 0.0 && b.1 == 0.0) {
        return (0.0, 0.0);
    }
    let p = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
    if p.iter().any(|x| x.is_nan()) {
        return (f64::NEG_INFINITY, f64::INFINITY);
    }
    let lo = p.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo.next_down(), hi.next_up())
}

/// `a + b` rounded down / up (∞ − ∞ gives −∞ / +∞).
fn add_down(a: f64, b: f64) -> f64 {
    let s = (a + b).next_down();
    if s.is_nan() { f64::NEG_INFINITY } else { s }
}

fn add_up(a: f64, b: f64) -> f64 {
    let s = (a + b).next_up();
    if s.is_nan() { f64::INFINITY } else { s }
}

impl OutputConstraint {
    /// Sound bounds `[lo, hi]` of `Σ c_j · Y_j − d` over every output in the box
    /// `[y_lo, y_hi]` and every value of the constants' intervals. `lo > 0`: no output in the
    /// box satisfies the constraint; `hi ≤ 0`: every output in it does. `None` when the box
    /// has fewer outputs than the constraint names.
    pub fn slack(&self, y_lo: &[f64], y_hi: &[f64]) -> Option<(f64, f64)> {
        let (mut lo, mut hi) = (-self.bound.hi, -self.bound.lo);
        for (j, c) in &self.coeffs {
            let y = (*y_lo.get(*j)?, *y_hi.get(*j)?);
            let (pl, ph) = mul_bounds((c.lo, c.hi), y);
            lo = add_down(lo, pl);
            hi = add_up(hi, ph);
        }
        Some((lo, hi))
    }
}

impl Case {
    /// Whether outputs bounded by `[y_lo, y_hi]` certainly avoid this case's unsafe set: some
    /// constraint cannot hold anywhere in the box.
    pub fn excluded_by(&self, y_lo: &[f64], y_hi: &[f64]) -> bool {
        self.unsafe_if
            .iter()
            .any(|c| c.slack(y_lo, y_hi).is_some_and(|(lo, _)| lo > 0.0))
    }

    /// Whether every output in `[y_lo, y_hi]` is unsafe: all constraints hold everywhere in the
    /// box (with the enclosure of one concrete input's outputs, a certified counterexample).
    pub fn surely_unsafe(&self, y_lo: &[f64], y_hi: &[f64]) -> bool {
        self.unsafe_if
            .iter()
            .all(|c| c.slack(y_lo, y_hi).is_some_and(|(_, hi)| hi <= 0.0))
    }
}

/// One case of the property: an input box and the output constraints that, all together, make
/// the network unsafe there.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// `[lo, hi]` per input, rounded outward: every input the property allows is inside.
    pub input_box: Vec<(f64, f64)>,
    /// `[lo, hi]` per input, rounded inward: every input inside is allowed by the property
    /// (where a bound is not a double, one ulp inside the outward box). Counterexamples are
    /// taken from here.
    pub inner_box: Vec<(f64, f64)>,
    pub unsafe_if: Vec<OutputConstraint>,
}

/// A parsed property.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub inputs: usize,
    pub outputs: usize,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Atom(String),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

fn error_at(line: usize, col: usize, what: impl std::fmt::Display) -> VramError {
    VramError::invalid("vnnlib", format!("line {line}, column {col}: {what}"))
}

fn tokenize(src: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let (mut line, mut col) = (1usize, 1usize);
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        let (l, k) = (line, col);
        match c {
            '\n' => {
                chars.next();
                line += 1;
                col = 1;
            }
            c if c.is_whitespace() => {
                chars.next();
                col += 1;
            }
            ';' => {
                while let Some(&c) = chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            '(' | ')' => {
                chars.next();
                col += 1;
                let tok = if c == '(' { Tok::Open } else { Tok::Close };
                out.push(Token {
                    tok,
                    line: l,
                    col: k,
                });
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == ';' {
                        break;
                    }
                    if !(c.is_ascii_graphic()) {
                        return Err(error_at(line, col, format!("unexpected character {c:?}")));
                    }
                    s.push(c);
                    chars.next();
                    col += 1;
                    if s.len() > MAX_TOKEN {
                        return Err(error_at(
                            l,
                            k,
                            format!("a token longer than {MAX_TOKEN} characters"),
                        ));
                    }
                }
                out.push(Token {
                    tok: Tok::Atom(s),
                    line: l,
                    col: k,
                });
            }
        }
    }
    Ok(out)
}

/// An S-expression with the position of its first token.
#[derive(Debug, Clone)]
enum Sexp {
    Atom(String, usize, usize),
    List(Vec<Sexp>, usize, usize),
}

impl Sexp {
    fn pos(&self) -> (usize, usize) {
        match self {
            Sexp::Atom(_, l, c) | Sexp::List(_, l, c) => (*l, *c),
        }
    }
}

fn parse_sexps(tokens: &[Token]) -> Result<Vec<Sexp>> {
    let mut stack: Vec<(Vec<Sexp>, usize, usize)> = Vec::new();
    let mut top = Vec::new();
    for t in tokens {
        match &t.tok {
            Tok::Open => {
                if stack.len() >= MAX_DEPTH {
                    return Err(error_at(t.line, t.col, "nested too deeply"));
                }
                stack.push((Vec::new(), t.line, t.col));
            }
            Tok::Close => {
                let Some((items, l, c)) = stack.pop() else {
                    return Err(error_at(t.line, t.col, "unbalanced ')'"));
                };
                let e = Sexp::List(items, l, c);
                match stack.last_mut() {
                    Some((parent, _, _)) => parent.push(e),
                    None => top.push(e),
                }
            }
            Tok::Atom(s) => {
                let e = Sexp::Atom(s.clone(), t.line, t.col);
                match stack.last_mut() {
                    Some((parent, _, _)) => parent.push(e),
                    None => return Err(error_at(t.line, t.col, format!("'{s}' outside a form"))),
                }
            }
        }
    }
    if let Some((_, l, c)) = stack.last() {
        return Err(error_at(*l, *c, "this '(' is never closed"));
    }
    Ok(top)
}

/// A boolean formula over comparisons `linear ≤ 0`.
#[derive(Debug, Clone)]
enum Formula {
    Le(Linear, usize, usize),
    And(Vec<Formula>),
    Or(Vec<Formula>),
}

struct Declared {
    inputs: usize,
    outputs: usize,
}

fn var_of(name: &str) -> Option<Var> {
    let (kind, idx) = name.split_once('_')?;
    let n: usize = idx.parse().ok()?;
    if idx != n.to_string() {
        return None; // X_01, X_+1: not a canonical name
    }
    let idx = n;
    match kind {
        "X" => Some(Var::Input(idx)),
        "Y" => Some(Var::Output(idx)),
        _ => None,
    }
}

fn linear(e: &Sexp, decl: &Declared) -> Result<Linear> {
    match e {
        Sexp::Atom(s, l, c) => {
            if let Some(v) = var_of(s) {
                let (n, what) = match v {
                    Var::Input(i) => (i, decl.inputs),
                    Var::Output(i) => (i, decl.outputs),
                };
                if n >= what {
                    return Err(error_at(*l, *c, format!("'{s}' is not declared")));
                }
                return Ok(Linear {
                    terms: [(v, Constant::point(1.0))].into(),
                    constant: Constant::point(0.0),
                });
            }
            let k = Constant::parse(s).ok_or_else(|| {
                error_at(
                    *l,
                    *c,
                    format!("'{s}' is neither a declared variable nor a number"),
                )
            })?;
            Ok(Linear {
                terms: Default::default(),
                constant: k,
            })
        }
        Sexp::List(items, l, c) => {
            let Some(Sexp::Atom(op, _, _)) = items.first() else {
                return Err(error_at(*l, *c, "expected an arithmetic term"));
            };
            let args = items.get(1..).unwrap_or(&[]);
            match (op.as_str(), args) {
                ("-", [a]) => Ok(negate(linear(a, decl)?)),
                ("+", [first, rest @ ..]) => {
                    let mut acc = linear(first, decl)?;
                    for a in rest {
                        acc = add(acc, linear(a, decl)?);
                    }
                    Ok(acc)
                }
                ("-", [a, rest @ ..]) if !rest.is_empty() => {
                    let mut acc = linear(a, decl)?;
                    for r in rest {
                        acc = add(acc, negate(linear(r, decl)?));
                    }
                    Ok(acc)
                }
                ("*", [a, b]) => {
                    let (a, b) = (linear(a, decl)?, linear(b, decl)?);
                    let (k, v) = match (a.terms.is_empty(), b.terms.is_empty()) {
                        (true, _) => (a.constant, b),
                        (_, true) => (b.constant, a),
                        _ => {
                            return Err(error_at(
                                *l,
                                *c,
                                "a product of two variables is not linear",
                            ));
                        }
                    };
                    scale(&k, v).ok_or_else(|| {
                        error_at(*l, *c, "only products with an exact constant are supported")
                    })
                }
                _ => Err(error_at(
                    *l,
                    *c,
                    format!("'{op}' with {} argument(s) is not supported", args.len()),
                )),
            }
        }
    }
}

fn negate(mut x: Linear) -> Linear {
    for k in x.terms.values_mut() {
        *k = k.neg();
    }
    x.constant = x.constant.neg();
    x
}

/// Sum of intervals, rounded outward.
fn add_const(a: &Constant, b: &Constant) -> Constant {
    let lo = a.lo + b.lo;
    let hi = a.hi + b.hi;
    // Round-to-nearest sums can land inside the true range: widen unless exact (TwoSum's
    // error term is zero).
    let exact = |x: f64, y: f64, s: f64| {
        let yy = s - x;
        (x - (s - yy)) + (y - yy) == 0.0
    };
    let exact_lo = exact(a.lo, b.lo, lo);
    let exact_hi = exact(a.hi, b.hi, hi);
    Constant {
        lo: if exact_lo { lo } else { lo.next_down() },
        hi: if exact_hi { hi } else { hi.next_up() },
        text: format!("({} + {})", a.text, b.text),
    }
}

fn add(mut a: Linear, b: Linear) -> Linear {
    for (v, k) in b.terms {
        match a.terms.get_mut(&v) {
            Some(existing) => *existing = add_const(existing, &k),
            None => {
                a.terms.insert(v, k);
            }
        }
    }
    a.constant = add_const(&a.constant, &b.constant);
    a
}

/// `k · x` for an exactly known `k` (a point interval); None otherwise.
fn scale(k: &Constant, mut x: Linear) -> Option<Linear> {
    if k.lo != k.hi {
        return None;
    }
    let mul = |c: &Constant| -> Constant {
        // Each end exact when the fused multiply-add finds no rounding error, else one ulp out.
        let end = |x: f64| {
            let p = x * k.lo;
            let exact = x.mul_add(k.lo, -p) == 0.0;
            (
                if exact { p } else { p.next_down() },
                if exact { p } else { p.next_up() },
            )
        };
        let (a, b) = (end(c.lo), end(c.hi));
        let (lo, hi) = (a.0.min(b.0), a.1.max(b.1));
        Constant {
            lo,
            hi,
            text: format!("({} * {})", k.text, c.text),
        }
    };
    for c in x.terms.values_mut() {
        *c = mul(c);
    }
    x.constant = mul(&x.constant);
    Some(x)
}

fn formula(e: &Sexp, decl: &Declared) -> Result<Formula> {
    let Sexp::List(items, l, c) = e else {
        let (l, c) = e.pos();
        return Err(error_at(l, c, "expected a comparison, 'and' or 'or'"));
    };
    let Some(Sexp::Atom(op, _, _)) = items.first() else {
        return Err(error_at(*l, *c, "expected a comparison, 'and' or 'or'"));
    };
    let args = items.get(1..).unwrap_or(&[]);
    match op.as_str() {
        "and" | "or" => {
            let parts = args
                .iter()
                .map(|a| formula(a, decl))
                .collect::<Result<Vec<_>>>()?;
            Ok(if op == "and" {
                Formula::And(parts)
            } else {
                Formula::Or(parts)
            })
        }
        "<=" | ">=" | "<" | ">" => {
            let [a, b] = args else {
                return Err(error_at(*l, *c, format!("'{op}' takes two terms")));
            };
            let (a, b) = (linear(a, decl)?, linear(b, decl)?);
            // Strict and non-strict comparisons bound the same closed sets up to measure zero;
            // a sound verdict over the closure covers both.
            let le = if op.starts_with('<') {
                add(a, negate(b))
            } else {
                add(b, negate(a))
            };
            Ok(Formula::Le(le, *l, *c))
        }
        other => Err(error_at(
            *l,
            *c,
            format!("'{other}' is not supported (VNN-LIB subset: <=, >=, and, or)"),
        )),
    }
}

/// Disjunctive normal form: a list of conjunctions.
fn dnf(f: &Formula) -> Result<Vec<Vec<(Linear, usize, usize)>>> {
    match f {
        Formula::Le(x, l, c) => Ok(vec![vec![(x.clone(), *l, *c)]]),
        Formula::Or(parts) => {
            let mut out = Vec::new();
            for p in parts {
                out.extend(dnf(p)?);
                if out.len() > MAX_CASES {
                    return Err(too_many());
                }
            }
            Ok(out)
        }
        Formula::And(parts) => {
            let mut acc = vec![Vec::new()];
            for p in parts {
                acc = product(&acc, &dnf(p)?)?;
            }
            Ok(acc)
        }
    }
}

fn product(
    a: &[Vec<(Linear, usize, usize)>],
    b: &[Vec<(Linear, usize, usize)>],
) -> Result<Vec<Vec<(Linear, usize, usize)>>> {
    if a.len().saturating_mul(b.len()) > MAX_CASES {
        return Err(too_many());
    }
    let atoms = |v: &[Vec<(Linear, usize, usize)>]| v.iter().map(Vec::len).sum::<usize>();
    let total = atoms(a)
        .saturating_mul(b.len())
        .saturating_add(atoms(b).saturating_mul(a.len()));
    if total > MAX_CASE_ATOMS {
        return Err(too_many());
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            let mut z = x.clone();
            z.extend(y.iter().cloned());
            out.push(z);
        }
    }
    Ok(out)
}

fn too_many() -> VramError {
    VramError::new(
        ErrorKind::Unsupported,
        format!(
            "vnnlib: the property's disjunctive normal form is too large (more than {MAX_CASES} cases or {MAX_CASE_ATOMS} comparisons and input bounds)"
        ),
    )
}

/// Parses a VNN-LIB property.
pub fn parse(src: &str) -> Result<Property> {
    if src.len() > MAX_BYTES {
        return Err(VramError::invalid(
            "vnnlib",
            format!("is larger than {MAX_BYTES} bytes"),
        ));
    }
    let forms = parse_sexps(&tokenize(src)?)?;
    let mut decl = Declared {
        inputs: 0,
        outputs: 0,
    };
    let mut asserts = Vec::new();
    for f in &forms {
        let Sexp::List(items, l, c) = f else { continue };
        match items.as_slice() {
            [
                Sexp::Atom(kw, _, _),
                Sexp::Atom(name, nl, nc),
                Sexp::Atom(ty, tl, tc),
            ] if kw == "declare-const" => {
                if ty != "Real" {
                    return Err(error_at(
                        *tl,
                        *tc,
                        format!("type '{ty}' is not supported (only Real)"),
                    ));
                }
                let Some(v) = var_of(name) else {
                    return Err(error_at(
                        *nl,
                        *nc,
                        format!("'{name}' is not an X_i or Y_j name"),
                    ));
                };
                let (slot, i) = match v {
                    Var::Input(i) => (&mut decl.inputs, i),
                    Var::Output(i) => (&mut decl.outputs, i),
                };
                if i != *slot {
                    return Err(error_at(
                        *nl,
                        *nc,
                        format!("'{name}' is declared out of order (expected index {slot})"),
                    ));
                }
                if i >= MAX_VARS {
                    return Err(error_at(*nl, *nc, "too many variables"));
                }
                *slot += 1;
            }
            [Sexp::Atom(kw, _, _), body] if kw == "assert" => asserts.push(formula(body, &decl)?),
            [Sexp::Atom(kw, _, _), ..] => {
                return Err(error_at(
                    *l,
                    *c,
                    format!("'{kw}' is not supported here (declare-const or assert)"),
                ));
            }
            _ => {
                return Err(error_at(
                    *l,
                    *c,
                    "expected (declare-const ...) or (assert ...)",
                ));
            }
        }
    }
    if decl.inputs == 0 || decl.outputs == 0 {
        return Err(VramError::invalid(
            "vnnlib",
            "declares no X_i inputs or no Y_j outputs",
        ));
    }
    let conjunctions = dnf(&Formula::And(asserts))?;
    if conjunctions.len().saturating_mul(decl.inputs) > MAX_CASE_ATOMS {
        return Err(too_many());
    }
    let cases = conjunctions
        .into_iter()
        .map(|conj| case_of(conj, &decl))
        .collect::<Result<Vec<_>>>()?;
    Ok(Property {
        inputs: decl.inputs,
        outputs: decl.outputs,
        cases,
    })
}

/// One conjunction: bounds on single inputs make the box; constraints on outputs only are
/// kept; anything mixing inputs and outputs (or a constraint on inputs that is not a bound) is
/// refused.
fn case_of(conj: Vec<(Linear, usize, usize)>, decl: &Declared) -> Result<Case> {
    let mut input_box = vec![(f64::NEG_INFINITY, f64::INFINITY); decl.inputs];
    let mut inner_box = input_box.clone();
    let mut unsafe_if = Vec::new();
    for (x, l, c) in conj {
        let inputs: Vec<_> = x
            .terms
            .iter()
            .filter(|(v, _)| matches!(v, Var::Input(_)))
            .collect();
        if inputs.is_empty() {
            let coeffs = x
                .terms
                .iter()
                .filter_map(|(v, k)| match v {
                    Var::Output(j) => Some((*j, k.clone())),
                    Var::Input(_) => None,
                })
                .collect();
            unsafe_if.push(OutputConstraint {
                coeffs,
                bound: x.constant.neg(),
            });
            continue;
        }
        let [(Var::Input(i), k)] = inputs.as_slice() else {
            return Err(error_at(
                l,
                c,
                "a constraint over several inputs is not supported (only bounds X_i <= c, X_i >= c)",
            ));
        };
        if inputs.len() != x.terms.len() {
            return Err(error_at(
                l,
                c,
                "a constraint mixing inputs and outputs is not supported",
            ));
        }
        // k·X_i + b ≤ 0 with k = ±1 exactly.
        let slot = input_box
            .get_mut(*i)
            .ok_or_else(|| error_at(l, c, "input out of range"))?;
        let b = &x.constant;
        let inner = inner_box
            .get_mut(*i)
            .ok_or_else(|| error_at(l, c, "input out of range"))?;
        if k.lo == 1.0 && k.hi == 1.0 {
            slot.1 = slot.1.min(-b.lo); // X_i ≤ −b: the largest −b, outward
            inner.1 = inner.1.min(-b.hi); // and the smallest, inward
        } else if k.lo == -1.0 && k.hi == -1.0 {
            slot.0 = slot.0.max(b.lo); // X_i ≥ b: the smallest b, outward
            inner.0 = inner.0.max(b.hi);
        } else {
            return Err(error_at(
                l,
                c,
                "only bounds X_i <= c and X_i >= c are supported on inputs",
            ));
        }
    }
    for (i, (lo, hi)) in input_box.iter().enumerate() {
        if !(lo.is_finite() && hi.is_finite()) {
            return Err(VramError::invalid(
                "vnnlib",
                format!("input X_{i} is not bounded on both sides in every case"),
            ));
        }
    }
    Ok(Case {
        input_box,
        inner_box,
        unsafe_if,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acasxu(prop: u32) -> Option<String> {
        let path = crate::certify::acasxu_dir().join(format!("vnnlib/prop_{prop}.vnnlib"));
        std::fs::read_to_string(path).ok()
    }

    #[test]
    fn constants_are_exact_or_one_ulp_wide() {
        let half = Constant::parse("0.5").unwrap();
        assert_eq!((half.lo, half.hi), (0.5, 0.5));
        let t = Constant::parse("0.6").unwrap();
        assert!(t.lo < 0.6 && 0.6 < t.hi && t.lo.next_up() == 0.6 && t.hi.next_down() == 0.6);
        let t = Constant::parse("3.991125645861615").unwrap();
        assert!(t.lo < t.hi);
        assert_eq!(Constant::parse("-12").unwrap().lo, -12.0);
        assert_eq!(Constant::parse("0.125000").unwrap().hi, 0.125);
        for bad in ["abc", "1.2.3", "-", "inf", "NaN", "1e999"] {
            assert!(Constant::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn property_1_of_acas_xu() {
        let Some(src) = acasxu(1) else {
            println!("SKIPPED property_1_of_acas_xu: ../shared/data/acasxu not found");
            return;
        };
        let p = parse(&src).unwrap();
        assert_eq!((p.inputs, p.outputs, p.cases.len()), (5, 5, 1));
        let case = &p.cases[0];
        // X_0 in [0.6, 0.679857769]: both inexact, so one ulp outward.
        assert_eq!(
            case.input_box[0],
            (0.6f64.next_down(), 0.679857769f64.next_up())
        );
        assert_eq!(case.input_box[1], (-0.5, 0.5));
        // Unsafe if Y_0 >= 3.991125645861615, i.e. -Y_0 <= -3.991125645861615.
        let [c] = case.unsafe_if.as_slice() else {
            panic!("{:?}", case.unsafe_if)
        };
        assert_eq!(c.coeffs.len(), 1);
        assert_eq!(c.coeffs[0].0, 0);
        assert_eq!((c.coeffs[0].1.lo, c.coeffs[0].1.hi), (-1.0, -1.0));
        assert!(c.bound.lo < -3.991125645861615 && -3.991125645861615 < c.bound.hi);
    }

    #[test]
    fn every_acas_xu_property_parses() {
        let mut found = 0;
        for prop in 1..=10 {
            let Some(src) = acasxu(prop) else { continue };
            found += 1;
            let p = parse(&src).unwrap_or_else(|e| panic!("prop {prop}: {e}"));
            assert_eq!((p.inputs, p.outputs), (5, 5));
            assert!(!p.cases.is_empty());
            for c in &p.cases {
                assert!(c.input_box.iter().all(|(lo, hi)| lo <= hi), "prop {prop}");
                assert!(!c.unsafe_if.is_empty());
            }
        }
        if found == 0 {
            println!("SKIPPED every_acas_xu_property_parses: ../shared/data/acasxu not found");
        }
        // Property 6: two input boxes times four output disjuncts.
        if let Some(src) = acasxu(6) {
            assert_eq!(parse(&src).unwrap().cases.len(), 8);
        }
    }

    #[test]
    fn terms_and_comparisons() {
        let src = "(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)
            (assert (>= X_0 -1)) (assert (<= X_0 1))
            (assert (or (and (<= (+ Y_0 (* 2 Y_1)) 3)) (and (>= (- Y_0 Y_1) 0.25))))";
        let p = parse(src).unwrap();
        assert_eq!(p.cases.len(), 2);
        assert_eq!(p.cases[0].input_box, vec![(-1.0, 1.0)]);
        let c = &p.cases[0].unsafe_if[0];
        assert_eq!(
            c.coeffs.iter().map(|(j, k)| (*j, k.lo)).collect::<Vec<_>>(),
            vec![(0, 1.0), (1, 2.0)]
        );
        assert!(c.bound.lo <= 3.0 && 3.0 <= c.bound.hi);
        // Y_0 - Y_1 >= 0.25  <=>  -Y_0 + Y_1 <= -0.25
        let c = &p.cases[1].unsafe_if[0];
        assert_eq!(
            c.coeffs.iter().map(|(j, k)| (*j, k.lo)).collect::<Vec<_>>(),
            vec![(0, -1.0), (1, 1.0)]
        );
        assert!(c.bound.lo <= -0.25 && -0.25 <= c.bound.hi);
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases = [
            (
                "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_1 0))",
                "line 3, column 13",
            ),
            (
                "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (=> X_0 0))",
                "line 3, column 9",
            ),
            (
                "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 0)",
                "line 3, column 1",
            ),
            ("(declare-const X_0 Int)", "line 1, column 20"),
            ("(declare-const X_1 Real)", "line 1, column 16"),
            (
                "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= (* X_0 Y_0) 0))",
                "line 1, column 61",
            ),
            (
                "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= (+ X_0 Y_0) 0))",
                "mixing",
            ),
            (
                "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (<= Y_0 0))",
                "not bounded",
            ),
            (")", "line 1, column 1"),
        ];
        for (src, want) in cases {
            let e = parse(src).unwrap_err();
            assert!(e.message.contains(want), "{src}: {}", e.message);
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{src}");
        }
    }

    #[test]
    fn slack_decides_property_1_soundly() {
        let Some(src) = acasxu(1) else {
            println!("SKIPPED slack_decides_property_1_soundly: ../shared/data/acasxu not found");
            return;
        };
        let case = &parse(&src).unwrap().cases[0];
        let y = |y0_lo: f64, y0_hi: f64| {
            (
                vec![y0_lo, -1.0, -1.0, -1.0, -1.0],
                vec![y0_hi, 1.0, 1.0, 1.0, 1.0],
            )
        };
        let (lo, hi) = y(0.0, 3.9);
        assert!(case.excluded_by(&lo, &hi) && !case.surely_unsafe(&lo, &hi));
        let (lo, hi) = y(4.0, 5.0);
        assert!(case.surely_unsafe(&lo, &hi) && !case.excluded_by(&lo, &hi));
        // The threshold itself, as a double: neither proven safe nor unsafe (the decimal is not
        // a double, and the verdict must not depend on which side rounding fell).
        let t = 3.991125645861615;
        let (lo, hi) = y(t, t);
        assert!(!case.excluded_by(&lo, &hi) && !case.surely_unsafe(&lo, &hi));
        let (lo, hi) = y(f64::NEG_INFINITY, f64::INFINITY);
        assert!(!case.excluded_by(&lo, &hi) && !case.surely_unsafe(&lo, &hi));
        assert!(case.unsafe_if[0].slack(&[0.0], &[0.0]).is_some());
        assert!(case.unsafe_if[0].slack(&[], &[]).is_none());
    }

    /// The slack bounds enclose the exact value Σ c·y − d (rationals) at random points of random
    /// boxes, with random inexact constants.
    #[test]
    fn slack_encloses_exact_arithmetic() {
        use num_rational::BigRational;
        use num_traits::FromPrimitive;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let exact = |v: f64| BigRational::from_f64(v).unwrap();
        for _ in 0..2000 {
            let n = 3;
            let coeffs: Vec<(usize, Constant)> = (0..n)
                .map(|j| {
                    (
                        j,
                        Constant::parse(&format!("{:.9}", 10.0 * next())).unwrap(),
                    )
                })
                .collect();
            let bound = Constant::parse(&format!("{:.12}", next())).unwrap();
            let c = OutputConstraint { coeffs, bound };
            let (lo_b, hi_b): (Vec<f64>, Vec<f64>) = (0..n)
                .map(|_| {
                    let (a, b) = (next(), next());
                    (a.min(b), a.max(b))
                })
                .unzip();
            let (lo, hi) = c.slack(&lo_b, &hi_b).unwrap();
            for _ in 0..4 {
                let t: Vec<f64> = (0..n).map(|_| (next() + 1.0) / 2.0).collect();
                // Points of the box (clamped: the f64 interpolation may round past an end).
                let y: Vec<f64> = (0..n)
                    .map(|j| (lo_b[j] + t[j] * (hi_b[j] - lo_b[j])).clamp(lo_b[j], hi_b[j]))
                    .collect();
                // The constants' ends (the extremes of a linear form are at corners).
                for (ck, dk) in [(0, 0), (1, 1), (0, 1), (1, 0)] {
                    let mut v = -exact(if dk == 0 { c.bound.lo } else { c.bound.hi });
                    for (j, k) in &c.coeffs {
                        v += exact(if ck == 0 { k.lo } else { k.hi }) * exact(y[*j]);
                    }
                    assert!(exact(lo) <= v && v <= exact(hi));
                }
            }
        }
    }

    /// Seeded mutations of a property (bytes flipped, dropped, duplicated; tokens spliced in):
    /// every one parses or is refused with an error, none panics, and each takes bounded
    /// time. Also a sum over many variables and a long literal.
    #[test]
    fn mutated_properties_never_panic() {
        let base = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n\
            (declare-const Y_1 Real)\n(assert (or (and (<= X_0 0.5) (>= X_0 -0.25)) \
            (and (<= X_0 1) (>= X_0 0.75))))\n(assert (<= X_1 0.1))(assert (>= X_1 -0.1))\n\
            (assert (or (and (<= Y_0 Y_1)) (and (>= (+ Y_0 (* -2 Y_1)) 3.991125645861615))))\n";
        assert!(parse(base).is_ok());
        let splices = [
            "(", ")", "or", "and", "<=", "X_9", "Y_0", "-", "1e308", "(assert", ";", "\u{0}",
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n.max(1) as u64) as usize
        };
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..10_000 {
            let mut m: Vec<u8> = base.as_bytes().to_vec();
            for _ in 0..1 + next(4) {
                let at = next(m.len());
                match next(4) {
                    0 => m[at] = (next(95) + 32) as u8,
                    1 => {
                        m.remove(at);
                    }
                    2 => {
                        let b = m[at];
                        m.insert(at, b);
                    }
                    _ => {
                        let s = splices[next(splices.len())];
                        m.splice(at..at, s.bytes());
                    }
                }
            }
            let text = String::from_utf8_lossy(&m);
            match parse(&text) {
                Ok(p) => {
                    ok += 1;
                    assert!(p.cases.iter().all(|c| c.input_box.len() == p.inputs));
                }
                Err(_) => refused += 1,
            }
        }
        assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
        // A sum over 20 000 declared outputs parses quickly (terms merge in a map).
        let mut big = String::from("(declare-const X_0 Real)");
        for j in 0..20_000 {
            big.push_str(&format!("(declare-const Y_{j} Real)"));
        }
        big.push_str("(assert (>= X_0 0))(assert (<= X_0 1))(assert (<= (+");
        for j in 0..20_000 {
            big.push_str(&format!(" Y_{j} Y_{j}"));
        }
        big.push_str(") 0))");
        let p = parse(&big).unwrap();
        assert_eq!(p.cases[0].unsafe_if[0].coeffs.len(), 20_000);
        assert_eq!(p.cases[0].unsafe_if[0].coeffs[7].1.lo, 2.0);
        let long = format!(
            "(declare-const X_0 Real)(assert (<= X_0 0.{}))",
            "1".repeat(2000)
        );
        assert!(parse(&long).unwrap_err().message.contains("longer than"));
    }

    #[test]
    fn too_many_cases_is_refused() {
        let mut src = String::from(
            "(declare-const X_0 Real)(declare-const Y_0 Real)(assert (>= X_0 0))(assert (<= X_0 1))",
        );
        for _ in 0..20 {
            src.push_str("(assert (or (<= Y_0 0) (>= Y_0 1)))");
        }
        assert_eq!(parse(&src).unwrap_err().kind, ErrorKind::Unsupported);
    }
}
