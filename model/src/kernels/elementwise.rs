//! GELU and softmax rows, forward and backward.

use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::simd::{dot, erf, exp, madd, max, sum, vectorized};
use super::written_by;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ramp;
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
}
