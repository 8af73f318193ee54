//! CPU kernels on plain f32 slices, shared by the fused ops and the inference path.
//!
//! * Elementwise maths (exp, erf, GELU, softmax rows) written as straight-line f32 code that the
//!   compiler vectorises, compiled three times: for AVX-512 and for AVX2+FMA (picked at run time
//!   by what the CPU has) and for the baseline target. candle's kernels call the scalar `libm` erf / exp per element,
//!   which was 13 % of a ViT-S forward.
//! * The linear layer's GEMM with its bias (and, at inference, the residual) written into the
//!   output before the product is accumulated onto it, instead of a second pass and a second
//!   buffer per layer.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Defines `pub fn $name(args)` that runs `$body` compiled for AVX-512 or AVX2+FMA when the CPU
/// supports them and for the baseline target otherwise.
macro_rules! vectorized {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) {
            // `FMA`: whether the body may use fused multiply-adds ([`madd`]).
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp<const FMA: bool>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) {
                    imp::<true>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) {
                    imp::<true>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp::<false>($($arg),*)
        }
    };
}

/// a·b + c: one fused multiply-add in the AVX2 / AVX-512 builds of the kernels, a multiply and
/// an add in the baseline build (where `mul_add` would become a slow library call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// eˣ in f32 (Cephes' `expf`: range reduction by ln 2, degree-6 polynomial; within 2 ulp of
/// the true value). Saturates at e⁻⁸⁷·³ (≈ 1.2e-38) below and e⁸⁸ above, which the callers
/// never reach (softmax and GELU only take exponentials of non-positive numbers).
#[inline(always)]
pub fn exp<const FMA: bool>(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to an integer in the low mantissa bits; both the rounded float and
    // the integer come out of bit operations that vectorise (a float-to-int cast does not: Rust's
    // saturating `as` turns into scalar compares).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_54, 88.0);
    let big = x * std::f32::consts::LOG2_E + ROUND;
    let n = big - ROUND;
    let ni = (big.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let m = madd::<FMA>;
    let r = m(n, 2.121_944_4e-4, m(n, -0.693_359_4, x));
    let p = m(1.987_569_1e-4, r, 1.398_199_9e-3);
    let p = m(p, r, 8.333_452e-3);
    let p = m(p, r, 4.166_579_6e-2);
    let p = m(p, r, 1.666_666_5e-1);
    let p = m(p, r, 0.5);
    let e = m(p * r, r, r) + 1.0;
    e * f32::from_bits(((ni + 127) << 23) as u32)
}

/// erf(x) in f32 (Abramowitz & Stegun 7.1.26: absolute error ≤ 1.5e-7 in exact arithmetic,
/// ≤ 5e-7 evaluated in f32; the approximation PyTorch's vectorised CPU GELU uses as well).
#[inline(always)]
pub fn erf<const FMA: bool>(x: f32) -> f32 {
    let m = madd::<FMA>;
    let a = x.abs();
    let t = 1.0 / m(0.327_591_1, a, 1.0);
    let p = m(1.061_405_4, t, -1.453_152);
    let p = m(p, t, 1.421_413_7);
    let p = m(p, t, -0.284_496_72);
    let p = m(p, t, 0.254_829_6);
    m(-(p * t), exp::<FMA>(-a * a), 1.0).copysign(x)
}

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

vectorized! {
    /// y = x Φ(x) (exact GELU) elementwise.
    pub fn gelu_slice(xs: &[f32], ys: &mut [MaybeUninit<f32>]) {
        for (y, &x) in ys.iter_mut().zip(xs) {
            y.write(0.5 * x * (1.0 + erf::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2)));
        }
    }
}

vectorized! {
    /// dx = g (Φ(x) + x φ(x)), the GELU backward, elementwise.
    pub fn gelu_backward_slice(xs: &[f32], gs: &[f32], dx: &mut [MaybeUninit<f32>]) {
        for ((d, &x), &g) in dx.iter_mut().zip(xs).zip(gs) {
            let cdf = 0.5 * (1.0 + erf::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = exp::<FMA>(-0.5 * x * x) * FRAC_1_SQRT_2PI;
            d.write(g * madd::<FMA>(x, pdf, cdf));
        }
    }
}

/// Running partial sums per reduction: enough independent vector accumulators (four of
/// AVX-512's 16 lanes, eight of AVX2's 8) to hide the latency of the adds, which a single
/// running sum or maximum makes a dependent chain.
const LANES: usize = 64;

/// The partial sums of the reductions below, added in one fixed tree order (halving).
#[inline(always)]
fn fold(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0]
}

/// Dot product with [`LANES`] running partial sums.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (mut ac, mut bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ac).zip(&mut bc) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    fold(acc) + tail
}

/// Sum with [`LANES`] running partial sums.
#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    fold(acc) + tail
}

/// Maximum with [`LANES`] running maxima (a single running maximum was half the time of the
/// attention softmax).
#[inline(always)]
fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    acc.iter().fold(tail, |a, &b| a.max(b))
}

vectorized! {
    /// Softmax of each row of length `n`, in place.
    pub fn softmax_rows(x: &mut [f32], n: usize) {
        for r in x.chunks_exact_mut(n) {
            let m = max(r);
            r.iter_mut().for_each(|v| *v = exp::<FMA>(*v - m));
            let inv = 1.0 / sum(r);
            r.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

vectorized! {
    /// One row of the softmax backward: dx = y (g - <y, g>).
    pub fn softmax_backward_row(y: &[f32], g: &[f32], dx: &mut [f32]) {
        let s = dot(y, g);
        for ((d, &yj), &gj) in dx.iter_mut().zip(y).zip(g) {
            *d = yj * (gj - s);
        }
    }
}

/// A vector of `n` floats that `fill` writes, without zero-filling it first (`vec![0.0; n]`
/// is a memset over every activation: 5 % of a ViT-S forward).
///
/// # Safety
/// `fill` must write every one of the `n` elements.
pub unsafe fn written_by(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<MaybeUninit<f32>> = Vec::with_capacity(n);
    // SAFETY: MaybeUninit elements need no initialisation.
    unsafe { v.set_len(n) };
    fill(&mut v);
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, length and capacity; `fill` initialised every element (the
    // caller's promise) and MaybeUninit<f32> has the layout of f32.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// Elements per parallel task of the elementwise kernels.
const CHUNK: usize = 16 * 1024;

/// [`gelu_slice`] over all threads.
pub fn gelu(xs: &[f32]) -> Vec<f32> {
    // SAFETY: the chunks cover the output and gelu_slice writes each element of its chunk.
    unsafe {
        written_by(xs.len(), |ys| {
            ys.par_chunks_mut(CHUNK)
                .zip(xs.par_chunks(CHUNK))
                .for_each(|(y, x)| gelu_slice(x, y))
        })
    }
}

/// [`gelu_backward_slice`] over all threads.
pub fn gelu_backward(xs: &[f32], gs: &[f32]) -> Vec<f32> {
    assert_eq!(
        xs.len(),
        gs.len(),
        "gelu backward: x and its gradient differ in size"
    );
    // SAFETY: the chunks cover the output and gelu_backward_slice writes each element.
    unsafe {
        written_by(xs.len(), |dx| {
            dx.par_chunks_mut(CHUNK)
                .zip(xs.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK)))
                .for_each(|(d, (x, g))| gelu_backward_slice(x, g, d))
        })
    }
}

vectorized! {
    /// Rows of `bias` (+ the same rows of `residual` unless it is empty) into `out`.
    pub fn fill_rows(out: &mut [MaybeUninit<f32>], bias: &[f32], residual: &[f32]) {
        let n = bias.len();
        if residual.is_empty() {
            for row in out.chunks_exact_mut(n) {
                for (o, &b) in row.iter_mut().zip(bias) {
                    o.write(b);
                }
            }
        } else {
            for (row, r) in out.chunks_exact_mut(n).zip(residual.chunks_exact(n)) {
                for ((o, &b), &rv) in row.iter_mut().zip(bias).zip(r) {
                    o.write(rv + b);
                }
            }
        }
    }
}

/// `x Wᵀ + b (+ residual)` for x (m, k) and W (n, k), both row-major: the bias and residual are
/// written into the output first and the product is accumulated onto them by the GEMM.
pub fn linear(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    residual: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "linear: x is not {m}x{k}");
    assert_eq!(w.len(), n * k, "linear: W is not {n}x{k}");
    if let Some(b) = b {
        assert_eq!(b.len(), n, "linear: bias is not {n}");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), m * n, "linear: residual is not {m}x{n}");
    }
    let zero = vec![0f32; n];
    let bias = b.unwrap_or(&zero);
    // The output starts as residual + bias (or bias, or zero), written in one pass.
    // SAFETY: the row blocks cover the output and fill_rows writes every element.
    let mut out = unsafe {
        written_by(m * n, |out| {
            out.par_chunks_mut(64 * n)
                .enumerate()
                .for_each(|(bi, rows)| {
                    let r = residual.map(|r| &r[bi * 64 * n..bi * 64 * n + rows.len()]);
                    fill_rows(rows, bias, r.unwrap_or(&[]))
                })
        })
    };
    // SAFETY: the three buffers have the asserted sizes and the strides below stay inside
    // them: out (m, n) row-major; x (m, k) row-major; Wᵀ read as (k, n) with column stride k.
    unsafe {
        gemm_strided(
            (m, n, k),
            out.as_mut_ptr(),
            (n, 1),
            true,
            x.as_ptr(),
            (k, 1),
            w.as_ptr(),
            (1, k),
            1.0,
            true,
        );
    }
    out
}

/// An input gradient and, when they were asked for, the (weight, bias) gradients.
pub type InputAndParamGrads = (Vec<f32>, Option<(Vec<f32>, Vec<f32>)>);

/// Rows per partial sum in the parameter-gradient reductions. Fixed, not derived from the
/// thread count, and the partials are added in order: the result is then the same bits on any
/// machine and any run, which a resumed run needs to continue exactly.
pub const REDUCE_ROWS: usize = 64;

/// Adds per-block partial sums in block order.
pub fn sum_in_order(partials: Vec<Vec<f32>>, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    for p in partials {
        out.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    out
}

/// Column sums of a row-major (rows, cols) matrix, in parallel blocks of [`REDUCE_ROWS`] rows.
pub fn column_sums(g: &[f32], cols: usize) -> Vec<f32> {
    let partials: Vec<Vec<f32>> = g
        .par_chunks(REDUCE_ROWS * cols)
        .map(|chunk| {
            let mut acc = vec![0f32; cols];
            for row in chunk.chunks_exact(cols) {
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            acc
        })
        .collect();
    sum_in_order(partials, cols)
}

/// Mean and 1/std of one row (two passes over the row).
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let d = x.len() as f32;
    let mean = sum(x) / d;
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let v = c[i] - mean;
            acc[i] += v * v;
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    let var = (fold(acc) + tail) / d;
    (mean, 1.0 / (var + eps).sqrt())
}

vectorized! {
    /// LayerNorm of each row of `x` (row length = w.len()), written to `y`.
    pub fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [MaybeUninit<f32>]) {
        let d = w.len();
        for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let (mean, rstd) = row_stats(xr, eps);
            for (((o, &v), &wv), &bv) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                o.write((v - mean) * rstd * wv + bv);
            }
        }
    }
}

/// LayerNorm over rows of length `w.len()` with affine weight and bias, on all threads.
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    assert_eq!(b.len(), d, "layer norm: weight and bias differ in size");
    assert_eq!(x.len() % d, 0, "layer norm: input is not rows of {d}");
    // SAFETY: the row blocks cover the output and layer_norm_rows writes every element.
    unsafe {
        written_by(x.len(), |y| {
            y.par_chunks_mut(32 * d)
                .zip(x.par_chunks(32 * d))
                .for_each(|(yc, xc)| layer_norm_rows(xc, w, b, eps, yc))
        })
    }
}

vectorized! {
    /// LayerNorm backward for a block of rows: writes dx and adds this block's weight and bias
    /// gradients to `dw`, `db`.
    pub fn layer_norm_backward_rows(
        x: &[f32],
        w: &[f32],
        g: &[f32],
        eps: f32,
        dx: &mut [MaybeUninit<f32>],
        dw: &mut [f32],
        db: &mut [f32],
        xhat: &mut [f32],
    ) {
        let d = w.len();
        for ((xr, gr), dxr) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let (mean, rstd) = row_stats(xr, eps);
            for (((xh, &xv), &gv), (dwj, dbj)) in
                xhat.iter_mut().zip(xr).zip(gr).zip(dw.iter_mut().zip(db.iter_mut()))
            {
                *xh = (xv - mean) * rstd;
                *dwj += gv * *xh;
                *dbj += gv;
            }
            // Row sums of g·w and g·w·x̂ with [`LANES`] partial sums each.
            let (mut s1, mut s2) = ([0f32; LANES], [0f32; LANES]);
            let (mut gc, mut wc, mut xc) =
                (gr.chunks_exact(LANES), w.chunks_exact(LANES), xhat[..d].chunks_exact(LANES));
            for ((g8, w8), x8) in (&mut gc).zip(&mut wc).zip(&mut xc) {
                for i in 0..LANES {
                    let gy = g8[i] * w8[i];
                    s1[i] += gy;
                    s2[i] += gy * x8[i];
                }
            }
            let (mut t1, mut t2) = (0f32, 0f32);
            for ((&gv, &wv), &xv) in gc.remainder().iter().zip(wc.remainder()).zip(xc.remainder()) {
                t1 += gv * wv;
                t2 += gv * wv * xv;
            }
            let m1 = (fold(s1) + t1) / d as f32;
            let m2 = (fold(s2) + t2) / d as f32;
            for j in 0..d {
                dxr[j].write(rstd * (gr[j] * w[j] - m1 - xhat[j] * m2));
            }
        }
    }
}

/// LayerNorm backward over all rows: dx, and the weight and bias gradients (summed in a fixed
/// order) when `params` is set.
pub fn layer_norm_backward(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    eps: f32,
    params: bool,
) -> InputAndParamGrads {
    let d = w.len();
    assert_eq!(
        x.len(),
        g.len(),
        "layer norm backward: x and its gradient differ in size"
    );
    let mut partials = Vec::new();
    // SAFETY: the row blocks cover dx and layer_norm_backward_rows writes every element.
    let dx = unsafe {
        written_by(x.len(), |dx| {
            partials = dx
                .par_chunks_mut(REDUCE_ROWS * d)
                .zip(
                    x.par_chunks(REDUCE_ROWS * d)
                        .zip(g.par_chunks(REDUCE_ROWS * d)),
                )
                .map(|(dxc, (xc, gc))| {
                    let (mut dw, mut db, mut xhat) = (vec![0f32; d], vec![0f32; d], vec![0f32; d]);
                    layer_norm_backward_rows(xc, w, gc, eps, dxc, &mut dw, &mut db, &mut xhat);
                    (dw, db)
                })
                .collect::<Vec<_>>();
        })
    };
    if !params {
        return (dx, None);
    }
    let (dws, dbs): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
    (dx, Some((sum_in_order(dws, d), sum_in_order(dbs, d))))
}

/// `dst (m, n) [+]= scale · lhs (m, k) · rhs (k, n)` with arbitrary row / column strides
/// (in elements). `read_dst` accumulates onto dst instead of overwriting it.
///
/// # Safety
/// Every strided access must stay inside the three buffers.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    read_dst: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    scale: f32,
    parallel: bool,
) {
    let threads = rayon::current_num_threads();
    // A long inner dimension and few output columns (fc2 and the backward of fc1): one
    // single-threaded GEMM per block of output columns ran ~10 % faster than the crate's own
    // threading on these shapes (320–330 against 290–300 GFLOP/s for 1576 x 768 x 3072).
    let cols = n.div_ceil(threads.max(1)).next_multiple_of(16);
    if parallel && threads > 1 && k >= 2 * n && cols >= 64 && m >= 256 {
        #[derive(Clone, Copy)]
        struct Ptrs(*mut f32, *const f32, *const f32);
        // SAFETY: each task writes its own columns of dst; lhs and rhs are only read.
        unsafe impl Send for Ptrs {}
        unsafe impl Sync for Ptrs {}
        let ptrs = Ptrs(dst, lhs, rhs);
        use rayon::prelude::*;
        (0..n.div_ceil(cols)).into_par_iter().for_each(move |c| {
            let p = ptrs;
            let (c0, w) = (c * cols, cols.min(n - c * cols));
            // SAFETY: columns c0 .. c0 + w of dst and rhs, inside the caller's bounds.
            unsafe {
                gemm_strided(
                    (m, w, k),
                    p.0.add(c0 * dst_cs),
                    (dst_rs, dst_cs),
                    read_dst,
                    p.1,
                    (lhs_rs, lhs_cs),
                    p.2.add(c0 * rhs_cs),
                    (rhs_rs, rhs_cs),
                    scale,
                    false,
                )
            }
        });
        return;
    }
    let par = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            read_dst,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            if read_dst { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            par,
        )
    }
}

/// Backward of `y = x Wᵀ + b` for x (m, k), W (n, k) and dy (m, n): dx = dy W, and with
/// `params` dW = dyᵀ x and db = column sums of dy (x is only read for dW: without `params` it
/// may be empty).
pub fn linear_backward(
    g: &[f32],
    x: &[f32],
    w: &[f32],
    (m, k, n): (usize, usize, usize),
    params: bool,
) -> InputAndParamGrads {
    assert!(
        g.len() == m * n && w.len() == n * k && (!params || x.len() == m * k),
        "linear backward: sizes"
    );
    // SAFETY: the GEMM writes all of dx (no read of dst); strides as for row-major buffers.
    let dx = unsafe {
        written_by(m * k, |dx| {
            gemm_strided(
                (m, k, n),
                dx.as_mut_ptr().cast::<f32>(),
                (k, 1),
                false,
                g.as_ptr(),
                (n, 1),
                w.as_ptr(),
                (k, 1),
                1.0,
                true,
            )
        })
    };
    if !params {
        return (dx, None);
    }
    // SAFETY: dW (n, k) is fully written; dyᵀ is dy read with swapped strides.
    let dw = unsafe {
        written_by(n * k, |dw| {
            gemm_strided(
                (n, k, m),
                dw.as_mut_ptr().cast::<f32>(),
                (k, 1),
                false,
                g.as_ptr(),
                (1, n),
                x.as_ptr(),
                (k, 1),
                1.0,
                true,
            )
        })
    };
    (dx, Some((dw, column_sums(g, n))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` deterministic test values centred on zero: ((i·step mod period) − period/2) / scale.
    fn ramp(len: usize, step: usize, period: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * step % period) as f32 - (period / 2) as f32) / scale)
            .collect()
    }

    /// Both builds of the scalar maths: with fused multiply-adds (AVX2 / AVX-512 kernels) and
    /// with separate multiplies and adds (baseline).
    fn both_builds(check: impl Fn(fn(f32) -> f32, fn(f32) -> f32, &str)) {
        check(exp::<true>, erf::<true>, "fma");
        check(exp::<false>, erf::<false>, "mul+add");
    }

    #[test]
    fn exp_is_within_two_ulp_on_the_range_used() {
        both_builds(|exp, _, build| {
            let mut worst = 0f64;
            for i in 0..=200_000 {
                let x = -87.0 + 88.0 * i as f32 / 200_000.0;
                let want = (x as f64).exp();
                let got = exp(x) as f64;
                worst = worst.max(((got - want) / want).abs());
            }
            assert!(worst < 2.5e-7, "{build}: worst relative error {worst:e}");
            assert_eq!(exp(0.0), 1.0, "{build}");
            assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1.2e-38, "{build}");
        });
    }

    #[test]
    fn erf_is_within_the_approximation_bound() {
        both_builds(|_, erf, build| {
            let mut worst = 0f64;
            for i in 0..=100_000 {
                let x = -6.0 + 12.0 * i as f64 / 100_000.0;
                let got = erf(x as f32) as f64;
                let want = candle_core::cpu::erf::erf_f64(x);
                worst = worst.max((got - want).abs());
            }
            // 1.5e-7 for the formula, plus the rounding of its f32 evaluation (a few ulp of 1).
            assert!(worst < 5e-7, "{build}: worst absolute error {worst:e}");
            assert_eq!(erf(0.0), 0.0, "{build}");
            assert_eq!(erf(-2.0), -erf(2.0), "{build}");
        });
    }

    #[test]
    fn gelu_and_its_derivative_match_f64() {
        let xs: Vec<f32> = (0..40_000).map(|i| -10.0 + i as f32 * 5e-4).collect();
        let gs: Vec<f32> = xs.iter().map(|x| 1.0 + 0.1 * x).collect();
        let ys = gelu(&xs);
        let dx = gelu_backward(&xs, &gs);
        for i in 0..xs.len() {
            let x = xs[i] as f64;
            let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let y = x * cdf;
            let d = gs[i] as f64 * (cdf + x * pdf);
            assert!(
                (ys[i] as f64 - y).abs() <= 3e-7 * (1.0 + x.abs()),
                "gelu({x})"
            );
            assert!(
                (dx[i] as f64 - d).abs() <= 6e-7 * (1.0 + x.abs()),
                "gelu'({x})"
            );
        }
    }

    #[test]
    fn softmax_rows_and_backward_match_f64() {
        let n = 197;
        let mut x = ramp(3 * n, 37, 101, 7.0);
        let orig = x.clone();
        softmax_rows(&mut x, n);
        let g = ramp(3 * n, 13, 29, 5.0);
        for r in 0..3 {
            let row = &orig[r * n..(r + 1) * n];
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            let y: Vec<f64> = e.iter().map(|v| v / s).collect();
            for j in 0..n {
                assert!((x[r * n + j] as f64 - y[j]).abs() <= 1e-6 * y[j] + 1e-9);
            }
            let gr = &g[r * n..(r + 1) * n];
            let dot: f64 = y.iter().zip(gr).map(|(a, &b)| a * b as f64).sum();
            let mut dx = vec![0f32; n];
            softmax_backward_row(&x[r * n..(r + 1) * n], gr, &mut dx);
            for j in 0..n {
                let want = y[j] * (gr[j] as f64 - dot);
                assert!(
                    (dx[j] as f64 - want).abs() <= 1e-5 * (want.abs() + 1e-3),
                    "dx[{j}]"
                );
            }
        }
    }

    fn naive_layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f64> {
        let d = w.len();
        x.chunks(d)
            .flat_map(|r| {
                let mean = r.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                let rstd = 1.0 / (var + eps).sqrt();
                (0..d).map(move |j| (r[j] as f64 - mean) * rstd * w[j] as f64 + b[j] as f64)
            })
            .collect()
    }

    #[test]
    fn layer_norm_and_backward_match_f64_and_finite_differences() {
        let (rows, d) = (70, 13);
        let x = ramp(rows * d, 31, 23, 4.0);
        let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 / 10.0).collect();
        let b: Vec<f32> = (0..d).map(|i| i as f32 / 20.0 - 0.3).collect();
        let g = ramp(rows * d, 7, 17, 8.0);
        let y = layer_norm(&x, &w, &b, 1e-6);
        for (a, e) in y.iter().zip(naive_layer_norm(&x, &w, &b, 1e-6)) {
            assert!((*a as f64 - e).abs() < 1e-5, "{a} vs {e}");
        }
        // Loss L = <g, LN(x)>: compare dx, dw, db with central differences in f64.
        let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            naive_layer_norm(x, w, b, 1e-6)
                .iter()
                .zip(&g)
                .map(|(y, &g)| y * g as f64)
                .sum()
        };
        let (dx, p) = layer_norm_backward(&x, &w, &g, 1e-6, true);
        let (dw, db) = p.unwrap();
        let h = 1e-2f32;
        for i in [0, 5, 77, 500, rows * d - 1] {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd = (loss(&xp, &w, &b) - loss(&xm, &w, &b)) / (2.0 * h as f64);
            assert!(
                (dx[i] as f64 - fd).abs() < 1e-3 * (1.0 + fd.abs()),
                "dx[{i}] {} vs {fd}",
                dx[i]
            );
        }
        for j in 0..d {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[j] += h;
            wm[j] -= h;
            let fd = (loss(&x, &wp, &b) - loss(&x, &wm, &b)) / (2.0 * h as f64);
            assert!(
                (dw[j] as f64 - fd).abs() < 1e-3 * (1.0 + fd.abs()),
                "dw[{j}]"
            );
            let want: f64 = (0..rows).map(|r| g[r * d + j] as f64).sum();
            assert!((db[j] as f64 - want).abs() < 1e-4, "db[{j}]");
        }
        let (dx2, none) = layer_norm_backward(&x, &w, &g, 1e-6, false);
        assert!(none.is_none() && dx2 == dx);
    }

    #[test]
    fn linear_backward_matches_naive_products() {
        let (m, k, n) = (150, 19, 11);
        let x = ramp(m * k, 7, 19, 9.0);
        let w = ramp(n * k, 5, 17, 8.0);
        let g = ramp(m * n, 3, 13, 6.0);
        let (dx, p) = linear_backward(&g, &x, &w, (m, k, n), true);
        let (dw, db) = p.unwrap();
        for i in 0..m {
            for t in 0..k {
                let want: f64 = (0..n).map(|j| (g[i * n + j] * w[j * k + t]) as f64).sum();
                assert!((dx[i * k + t] as f64 - want).abs() < 1e-4, "dx[{i},{t}]");
            }
        }
        for j in 0..n {
            for t in 0..k {
                let want: f64 = (0..m).map(|i| (g[i * n + j] * x[i * k + t]) as f64).sum();
                assert!((dw[j * k + t] as f64 - want).abs() < 1e-3, "dw[{j},{t}]");
            }
            let want: f64 = (0..m).map(|i| g[i * n + j] as f64).sum();
            assert!((db[j] as f64 - want).abs() < 1e-4, "db[{j}]");
        }
        assert!(linear_backward(&g, &x, &w, (m, k, n), false).1.is_none());
    }

    #[test]
    fn linear_with_bias_and_residual_matches_a_naive_product() {
        let (m, k, n) = (37, 29, 23);
        let x = ramp(m * k, 7, 19, 9.0);
        let w = ramp(n * k, 5, 17, 8.0);
        let b: Vec<f32> = (0..n).map(|i| i as f32 / 10.0).collect();
        let r: Vec<f32> = (0..m * n).map(|i| (i % 11) as f32).collect();
        let y = linear(&x, &w, Some(&b), Some(&r), m, k, n);
        let y0 = linear(&x, &w, None, None, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|t| (x[i * k + t] * w[j * k + t]) as f64).sum();
                let want = dot + b[j] as f64 + r[i * n + j] as f64;
                assert!((y[i * n + j] as f64 - want).abs() < 1e-4, "y[{i},{j}]");
                assert!((y0[i * n + j] as f64 - dot).abs() < 1e-4, "y0[{i},{j}]");
            }
        }
    }
}
