//! LayerNorm over rows, forward and backward.

use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::simd::{fold, sum, vectorized, LANES};
use super::{sum_in_order, written_by, InputAndParamGrads, REDUCE_ROWS};

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
pub fn layer_norm_forward(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ramp;
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
        let y = layer_norm_forward(&x, &w, &b, 1e-6);
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
}
