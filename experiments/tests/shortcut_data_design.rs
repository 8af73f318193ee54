//! The synthetic generator measured against the embedded benchmark's design (demo design §1,
//! §1.1): shape areas, textures, background colours and stripes, noise, the grey fraction and
//! the test-set definitions, all read back from generated pixels.

use experiments::shortcut_data::{generate, Sample, Split, SynthConfig, TestSet};
use std::f64::consts::PI;

const S: usize = 32;

fn cfg(seed: u64) -> SynthConfig {
    SynthConfig {
        n_train: 800,
        n_test: 800,
        seed,
        ..SynthConfig::default()
    }
}

fn px(s: &Sample, x: usize, y: usize) -> [f64; 3] {
    let i = 3 * (y * S + x);
    [0, 1, 2].map(|c| f64::from(s.rgb[i + c]) / 255.0)
}

fn fg(s: &Sample, x: usize, y: usize) -> bool {
    s.mask[y * S + x] == 1
}

/// Areas of the §1.1 shapes in units of the squared half-size, worked out by hand.
const AREA: [f64; 8] = [
    PI,                                 // disk of radius 1
    1.6 * 1.6,                          // square of half-side 0.8
    0.5 * 1.9 * 1.7,                    // triangle: base 2·0.95 at v = 0.8, height 1.7
    2.0 * 0.6 * 2.0 - 0.6 * 0.6,        // plus: two 0.6 × 2 bars minus their overlap
    PI * 0.75,                          // ring between radii 0.5 and 1
    2.0,                                // diamond |u| + |v| ≤ 1
    2.0 * (3.24 - 1.35 * 1.35) - 0.405, // X: two bands of 1.8² − (1.8 − 0.45)² minus a 2·0.45² diamond
    1.8 * 1.8 - 1.0,                    // frame between half-sides 0.5 and 0.9
];

/// Mean mask area per class over many objects against the analytic area times the half-size²
/// of each object: the shapes are §1.1's, drawn by the pixel-centre test.
#[test]
fn shape_areas_match_the_design_geometry() {
    let set = generate(&cfg(1), Split::Train).unwrap();
    let mut measured = [0.0; 8];
    let mut analytic = [0.0; 8];
    for s in &set {
        let n = s.mask.iter().filter(|&&m| m == 1).count() as f64;
        measured[s.class] += n;
        analytic[s.class] += AREA[s.class] * s.half_size * s.half_size;
    }
    for k in 0..8 {
        let r = measured[k] / analytic[k];
        assert!(
            (r - 1.0).abs() < 0.02,
            "class {k}: measured/analytic area {r:.4}"
        );
    }
    // 12.8 % of the image on average (design §1); half-size U(0.19, 0.28)·32, centre ± 3.2 px.
    let total: f64 = measured.iter().sum();
    let frac = total / (set.len() * S * S) as f64;
    assert!((frac - 0.128).abs() < 0.004, "foreground fraction {frac}");
    for s in &set {
        assert!((6.08..=8.96).contains(&s.half_size));
        assert!(s.center.iter().all(|c| (c - 16.0).abs() <= 3.2));
    }
}

/// Thickness of the thin parts, from mask pixels in one column (a random centre makes the
/// count an unbiased estimate of the covered length): the plus's horizontal arm at u ≈ 0.65
/// spans 2·0.3 half-sizes, the X at u ≈ 0 spans 2·0.45, the frame at u ≈ 0 has two sides of
/// 0.9 − 0.5 each.
#[test]
fn bars_are_as_thick_as_the_design() {
    let set = generate(&cfg(2), Split::Test(TestSet::FgOnly)).unwrap();
    let mut ratios: [Vec<f64>; 3] = Default::default();
    for s in &set {
        let (target, slot, width) = match s.class {
            3 => (0.65, 0, 0.6),
            6 => (0.0, 1, 0.9),
            7 => (0.0, 2, 0.8),
            _ => continue,
        };
        let (col, u) = (0..S)
            .map(|x| (x, (x as f64 + 0.5 - s.center[0]) / s.half_size))
            .min_by(|a, b| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()))
            .unwrap();
        if (u - target).abs() > 0.05 {
            continue;
        }
        let n = (0..S).filter(|&y| fg(s, col, y)).count() as f64;
        // The X widens by 2|u| away from its centre.
        let width = if slot == 1 {
            width + 2.0 * u.abs()
        } else {
            width
        };
        ratios[slot].push(n / (width * s.half_size));
    }
    for (name, r) in ["plus arm", "X", "frame"].iter().zip(&ratios) {
        let m = r.iter().sum::<f64>() / r.len() as f64;
        assert!(
            r.len() >= 15 && (m - 1.0).abs() < 0.06,
            "{name}: {m:.3} over {}",
            r.len()
        );
    }
}

/// Two pixels share a texture colour when their colours are close: c1 and c2 differ by 0.5 in
/// every channel and the noise has std 0.04.
fn same(a: [f64; 3], b: [f64; 3]) -> bool {
    (0..3).map(|c| (a[c] - b[c]).abs()).sum::<f64>() < 0.75
}

/// Fraction of object-pixel pairs at offset (dx, dy) that share a colour.
fn agreement(set: &[&Sample], dx: i32, dy: i32) -> f64 {
    let (mut n, mut eq) = (0usize, 0usize);
    for s in set {
        for y in 0..S as i32 {
            for x in 0..S as i32 {
                let (x2, y2) = (x + dx, y + dy);
                if !(0..S as i32).contains(&x2) || !(0..S as i32).contains(&y2) {
                    continue;
                }
                let (a, b) = ((x as usize, y as usize), (x2 as usize, y2 as usize));
                if fg(s, a.0, a.1) && fg(s, b.0, b.1) {
                    n += 1;
                    eq += usize::from(same(px(s, a.0, a.1), px(s, b.0, b.1)));
                }
            }
        }
    }
    eq as f64 / n as f64
}

/// Each class's texture read back as colour agreement at small offsets (an autocorrelation):
/// 1 where the pattern repeats, 0 where it flips, ½ where it is mixed.
#[test]
fn textures_have_the_design_periods_and_orientations() {
    let set = generate(&cfg(3), Split::Test(TestSet::FgOnly)).unwrap();
    // (dx, dy) offsets: right 1, down 1, down-right 1, up-right 1, right 2, down 2, right 3,
    // down 3, down 4.
    let offsets = [
        (1, 0),
        (0, 1),
        (1, 1),
        (1, -1),
        (2, 0),
        (0, 2),
        (3, 0),
        (0, 3),
        (0, 4),
    ];
    let h = 0.5; // mixed
    let expected: [[f64; 9]; 8] = [
        // horizontal lines, period 2
        [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0],
        // vertical lines, period 2
        [0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0],
        // 1-px checkerboard
        [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0],
        // "/" diagonals, period 4: constant up-right
        [h, h, 0.0, 1.0, 0.0, 0.0, h, h, 1.0],
        // "\" diagonals, period 4: constant down-right
        [h, h, 1.0, 0.0, 0.0, 0.0, h, h, 1.0],
        // 2-px checkerboard
        [h, h, h, h, 0.0, 0.0, h, h, 1.0],
        // dots every 3 px: 1/9 of the pixels; two in a row never both dots
        [
            7.0 / 9.0,
            7.0 / 9.0,
            7.0 / 9.0,
            7.0 / 9.0,
            7.0 / 9.0,
            7.0 / 9.0,
            1.0,
            1.0,
            7.0 / 9.0,
        ],
        // horizontal lines, period 4
        [1.0, h, h, h, 1.0, 0.0, 1.0, h, 1.0],
    ];
    for (k, row) in expected.iter().enumerate() {
        let of_k: Vec<&Sample> = set.iter().filter(|s| s.class == k).collect();
        for (&(dx, dy), &e) in offsets.iter().zip(row) {
            let a = agreement(&of_k, dx, dy);
            assert!(
                (a - e).abs() < 0.08,
                "class {k} offset ({dx},{dy}): {a:.3}, expected {e}"
            );
        }
    }
}

/// Hue (degrees) of an RGB colour.
fn hue(c: [f64; 3]) -> f64 {
    let (max, min) = (c[0].max(c[1]).max(c[2]), c[0].min(c[1]).min(c[2]));
    let d = max - min;
    let h = if max == c[0] {
        ((c[1] - c[2]) / d).rem_euclid(6.0)
    } else if max == c[1] {
        (c[2] - c[0]) / d + 2.0
    } else {
        (c[0] - c[1]) / d + 4.0
    };
    60.0 * h
}

/// Least-squares fit of `a·sin(φ) + b·cos(φ)` with φ = 2π(x cos θ + y sin θ)/period on the
/// background pixels' channel mean, after removing its mean; returns the amplitude.
fn stripe_amplitude(s: &Sample, theta: f64, period: f64) -> f64 {
    let pts: Vec<(f64, f64)> = (0..S * S)
        .filter(|&i| s.mask[i] == 0)
        .map(|i| {
            let (x, y) = ((i % S) as f64, (i / S) as f64);
            let p = px(s, i % S, i / S);
            let phi = 2.0 * PI * (x * theta.cos() + y * theta.sin()) / period;
            (phi, (p[0] + p[1] + p[2]) / 3.0)
        })
        .collect();
    let mean = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
    let (mut ss, mut cc, mut sc, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(phi, v) in &pts {
        let (sn, cs) = (phi.sin(), phi.cos());
        ss += sn * sn;
        cc += cs * cs;
        sc += sn * cs;
        sy += sn * (v - mean);
        cy += cs * (v - mean);
    }
    let det = ss * cc - sc * sc;
    let a = (sy * cc - cy * sc) / det;
    let b = (cy * ss - sy * sc) / det;
    (a * a + b * b).sqrt()
}

/// Background type t: mean colour on the hue wheel at 360°·t/K with channels spanning
/// 0.25–0.75, and 0.15-amplitude stripes of orientation t·π/K and period 3 + 2·(t mod 3) px,
/// which fit better than every other type's orientation and period.
#[test]
fn backgrounds_follow_the_colour_wheel_and_stripes() {
    let set = generate(&cfg(4), Split::Test(TestSet::BgRand)).unwrap();
    let k = 8;
    for t in 0..k {
        let of_t: Vec<&Sample> = set.iter().filter(|s| s.background == Some(t)).collect();
        assert!(of_t.len() > 60, "type {t}: {} images", of_t.len());
        let mut mean = [0.0; 3];
        let mut n = 0.0;
        for s in &of_t {
            for i in (0..S * S).filter(|&i| s.mask[i] == 0) {
                let p = px(s, i % S, i / S);
                (0..3).for_each(|c| mean[c] += p[c]);
                n += 1.0;
            }
        }
        let mean = mean.map(|m| m / n);
        let (max, min) = (
            mean[0].max(mean[1]).max(mean[2]),
            mean[0].min(mean[1]).min(mean[2]),
        );
        assert!(
            (max - 0.75).abs() < 0.01 && (min - 0.25).abs() < 0.01,
            "type {t}: {mean:?}"
        );
        let dh = (hue(mean) - 360.0 * t as f64 / k as f64 + 180.0).rem_euclid(360.0) - 180.0;
        assert!(dh.abs() < 2.0, "type {t}: hue {}", hue(mean));

        let period = (3 + 2 * (t % 3)) as f64;
        let theta = t as f64 * PI / k as f64;
        let mut amp = 0.0;
        for s in of_t.iter().take(20) {
            let own = stripe_amplitude(s, theta, period);
            amp += own / 20.0;
            for (t2, p2) in (0..k).flat_map(|t2| [3.0, 5.0, 7.0].map(|p| (t2, p))) {
                if t2 == t && p2 == period {
                    continue;
                }
                let other = stripe_amplitude(s, t2 as f64 * PI / k as f64, p2);
                assert!(other < own, "type {t}: θ {t2}π/8 period {p2} fits better");
            }
        }
        assert!(
            (amp - 0.15).abs() < 0.01,
            "type {t}: stripe amplitude {amp}"
        );
    }
}

/// The grey background is 0.5 plus N(0, 0.04) per channel (std 0.04, nothing clipped).
#[test]
fn noise_has_std_0_04() {
    let set = generate(&cfg(5), Split::Test(TestSet::FgOnly)).unwrap();
    let vals: Vec<f64> = set
        .iter()
        .take(200)
        .flat_map(|s| {
            (0..S * S)
                .filter(|&i| s.mask[i] == 0)
                .flat_map(move |i| px(s, i % S, i / S))
        })
        .collect();
    let n = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!((mean - 0.5).abs() < 0.002, "grey {mean}");
    // Quantisation to 1/255 adds (1/255)²/12 to the variance: 0.04 → 0.04002.
    assert!((sd - 0.04).abs() < 0.001, "noise std {sd}");
}

/// Training: every class equally often, exactly 20 % of the images on grey and the rest on
/// their own class's background (no conflicting examples); texture colours independent of the
/// class, c2 = c1 + 0.5 mod 1.
#[test]
fn training_set_mix() {
    let c = SynthConfig {
        n_train: 4000,
        ..cfg(6)
    };
    let set = generate(&c, Split::Train).unwrap();
    let grey = set.iter().filter(|s| s.background.is_none()).count();
    assert_eq!(grey, 800);
    assert!(set
        .iter()
        .all(|s| s.background.is_none_or(|b| b == s.class)));
    for k in 0..8 {
        assert_eq!(set.iter().filter(|s| s.class == k).count(), 500);
        // Mean object colour ≈ 0.5 per channel for every class: colours carry no class.
        let (mut sum, mut n) = (0.0, 0.0);
        for s in set.iter().filter(|s| s.class == k) {
            for i in (0..S * S).filter(|&i| s.mask[i] == 1) {
                sum += px(s, i % S, i / S).iter().sum::<f64>() / 3.0;
                n += 1.0;
            }
        }
        assert!(
            (sum / n - 0.5).abs() < 0.03,
            "class {k}: mean colour {}",
            sum / n
        );
    }
    // The two colours of an object differ by 0.5 (mod 1) in every channel.
    for s in set.iter().filter(|s| s.class == 0).take(50) {
        let cols: Vec<[f64; 3]> = (0..S * S)
            .filter(|&i| s.mask[i] == 1)
            .map(|i| px(s, i % S, i / S))
            .collect();
        let a = cols[0];
        let b = *cols.iter().find(|c| !same(a, **c)).unwrap();
        for ch in 0..3 {
            let d = (a[ch] - b[ch]).abs();
            // Clipping at 0 or 1 plus noise can shave a little off.
            assert!((d - 0.5).abs() < 0.2, "channel {ch}: {d}");
        }
    }
}

/// Test sets (design §1): id on the class background, bg_swap always on a wrong class's,
/// bg_rand/loc/size on uniform random types, fg_only on grey; size objects at half size
/// (3–4.5 px); the finetune set is the first 3 of each class of a fresh id draw.
#[test]
fn test_sets_and_finetune_set() {
    let c = cfg(7);
    for t in TestSet::ALL {
        let set = generate(&c, Split::Test(t)).unwrap();
        let mut types = [0usize; 8];
        for s in &set {
            match (t, s.background) {
                (TestSet::Id, b) => assert_eq!(b, Some(s.class)),
                (TestSet::FgOnly, b) => assert_eq!(b, None),
                (TestSet::BgSwap, Some(b)) => assert_ne!(b, s.class),
                (_, Some(b)) => types[b] += 1,
                (_, None) => panic!("{}: grey background", t.name()),
            }
            match t {
                TestSet::Size => assert!((3.0..=4.5).contains(&s.half_size)),
                _ => assert!((6.08..=8.96).contains(&s.half_size)),
            }
        }
        if matches!(t, TestSet::BgRand | TestSet::Loc | TestSet::Size) {
            // Uniform over 8 types: 100 each expected, a 5σ band.
            assert!(
                types.iter().all(|&n| (50..=150).contains(&n)),
                "{}: {types:?}",
                t.name()
            );
        }
    }
    let ft = generate(&c, Split::Finetune).unwrap();
    assert_eq!(ft.len(), 24);
    for (i, s) in ft.iter().enumerate() {
        assert_eq!((s.class, s.background), (i / 3, Some(i / 3)));
        assert!((6.08..=8.96).contains(&s.half_size));
    }
}
