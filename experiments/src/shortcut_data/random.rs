//! Random numbers and portable maths: every random number of the generator comes from
//! ChaCha8 through [`Draw`], and sin, cos and ln are computed from IEEE basic operations, so
//! the same seed gives byte-identical pixels on every machine.

use std::f64::consts::{FRAC_PI_2, LN_2, PI, SQRT_2, TAU};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Split;

/// ChaCha8 output turned into the few distributions needed, with fixed algorithms so the
/// streams do not depend on the `rand` version.
pub(super) struct Draw(ChaCha8Rng);

impl Draw {
    /// Key = (seed, FNV-1a of the split name): distinct for every (seed, split) pair.
    pub(super) fn new(seed: u64, split: Split, stream: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&fnv1a(FNV_OFFSET, split.name().as_bytes()).to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(stream);
        Draw(rng)
    }

    /// Uniform on [0, 1) with 53 random bits.
    pub(super) fn u01(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub(super) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.u01()
    }

    /// Unbiased integer in 0..n (rejection sampling).
    pub(super) fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let reject = (u64::MAX % n + 1) % n;
        loop {
            let x = self.0.next_u64();
            if x <= u64::MAX - reject {
                return (x % n) as usize;
            }
        }
    }

    /// Two independent N(0, 1) values (Marsaglia's polar method).
    pub(super) fn gauss_pair(&mut self) -> (f64, f64) {
        loop {
            let u = 2.0 * self.u01() - 1.0;
            let v = 2.0 * self.u01() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * det_ln(s) / s).sqrt();
                return (u * f, v * f);
            }
        }
    }

    pub(super) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// sin from basic IEEE operations (libm's last-bit differences between platforms could flip
/// a quantised pixel). Accurate to ~1e-15 for the arguments used here.
pub(super) fn det_sin(x: f64) -> f64 {
    let mut r = x - (x / TAU).round() * TAU;
    if r > FRAC_PI_2 {
        r = PI - r;
    } else if r < -FRAC_PI_2 {
        r = -PI - r;
    }
    let r2 = r * r;
    let (mut term, mut sum) = (r, r);
    for n in 1..=11u32 {
        let k = f64::from(2 * n);
        term *= -r2 / (k * (k + 1.0));
        sum += term;
    }
    sum
}

pub(super) fn det_cos(x: f64) -> f64 {
    det_sin(x + FRAC_PI_2)
}

/// Natural log of a positive normal number from basic IEEE operations (see [`det_sin`]).
fn det_ln(x: f64) -> f64 {
    debug_assert!(x >= f64::MIN_POSITIVE && x.is_finite());
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2·atanh(s), |s| ≤ 0.172.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let (mut pow, mut sum) = (s, s);
    for k in 1..=13u32 {
        pow *= s2;
        sum += pow / f64::from(2 * k + 1);
    }
    e as f64 * LN_2 + 2.0 * sum
}

pub(super) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64: a few lines, no dependency, good enough to detect changed or corrupted data.
pub(super) fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_maths_match_std() {
        for i in -2000..2000 {
            let x = i as f64 * 0.0731;
            assert!((det_sin(x) - x.sin()).abs() < 1e-13, "sin({x})");
            assert!((det_cos(x) - x.cos()).abs() < 1e-13, "cos({x})");
        }
        for i in 1..5000 {
            let x = i as f64 * 1.37e-3;
            assert!((det_ln(x) - x.ln()).abs() < 1e-14, "ln({x})");
        }
        assert!((det_ln(1e-30) - 1e-30f64.ln()).abs() < 1e-12);
        let mut d = Draw::new(3, Split::Train, 9);
        let n = 20000;
        let v: Vec<f64> = (0..n / 2)
            .flat_map(|_| {
                let (a, b) = d.gauss_pair();
                [a, b]
            })
            .collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.04,
            "{mean} {var}"
        );
    }
}
