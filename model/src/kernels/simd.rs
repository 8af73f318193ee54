//! The vectorised builds of the kernels and the scalar maths they are written in.
//!
//! Elementwise maths written as straight-line f32 code that the compiler vectorises, compiled
//! three times: for AVX-512 and for AVX2+FMA (picked at run time by what the CPU has) and for
//! the baseline target.

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
pub(crate) use vectorized;

/// a·b + c: one fused multiply-add in the AVX2 / AVX-512 builds of the kernels, a multiply and
/// an add in the baseline build (where `mul_add` would become a slow library call).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
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

/// Running partial sums per reduction: enough independent vector accumulators (four of
/// AVX-512's 16 lanes, eight of AVX2's 8) to hide the latency of the adds, which a single
/// running sum or maximum makes a dependent chain.
pub(crate) const LANES: usize = 64;

/// The partial sums of the reductions below, added in one fixed tree order (halving).
#[inline(always)]
pub(crate) fn fold(mut acc: [f32; LANES]) -> f32 {
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
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
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
pub(crate) fn sum(v: &[f32]) -> f32 {
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
pub(crate) fn max(v: &[f32]) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
