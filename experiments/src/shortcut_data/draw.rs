//! Drawing one image: the class shapes and textures, the striped or grey backgrounds, the
//! object's placement per test set, and the pixel noise (design §1.1).

use std::f64::consts::{PI, TAU};

use super::random::{det_cos, det_sin, Draw};
use super::{Sample, Split, SynthConfig, TestSet};

/// Standard deviation of the per-channel pixel noise. The design writes "N(0, 0.04)"; it is
/// read as the standard deviation, since a variance of 0.04 (σ = 0.2) would drown the 0.15
/// background stripes and the texture contrast the design relies on.
pub const NOISE_STD: f64 = 0.04;

/// Object half-size range, as a fraction of the image size (6–9 px at 32 px).
const HALF_MIN: f64 = 0.19;
const HALF_MAX: f64 = 0.28;
/// Centre jitter, ± this fraction of the image size around the centre.
const JITTER: f64 = 0.1;
/// `loc` objects keep their bounding box within this fraction of the size from the corner.
const CORNER_MARGIN: f64 = 0.05;
/// Amplitude of the background stripes added to the hue-wheel colour.
const STRIPE_AMP: f64 = 0.15;
/// Flat grey of the "none" background.
const GREY: f64 = 0.5;
/// Inner radius of the ring, relative to its outer radius.
const RING_INNER: f64 = 0.5;
/// Half-width of the plus and T bars, relative to the half-size (design §1.1). The bars must
/// be this thick: at half-width 0.21 the object carries too little signal per patch and the
/// benchmark's effect drops by about a third.
const BAR: f64 = 0.3;
/// Half-width of the X's diagonal bars, measured along an axis (|u ± v| ≤ 0.45).
const X_BAR: f64 = 0.45;
/// Half-side of the square and inner/outer half-sides of the frame (design §1.1); with these
/// the objects cover 12.8 % of the pixels on average.
const SQUARE: f64 = 0.8;
const FRAME_INNER: f64 = 0.5;
const FRAME_OUTER: f64 = 0.9;

/// Pixel-centre inclusion test of class `class`'s shape, in coordinates normalised by the
/// half-size (u to the right, v downward): exactly the table of design §1.1.
fn shape_contains(class: usize, u: f64, v: f64) -> bool {
    let (au, av) = (u.abs(), v.abs());
    let r2 = u * u + v * v;
    match class {
        // disk
        0 => r2 <= 1.0,
        // square
        1 => au.max(av) <= SQUARE,
        // triangle, apex up: base at v = 0.8, apex at v = -0.9
        2 => (-0.9..=0.8).contains(&v) && au <= 0.95 * (v + 0.9) / 1.7,
        // plus
        3 => (au <= BAR && av <= 1.0) || (av <= BAR && au <= 1.0),
        // ring
        4 => (RING_INNER * RING_INNER..=1.0).contains(&r2),
        // diamond
        5 => au + av <= 1.0,
        // X: two diagonal bars clipped to a box of half-side 0.9
        6 => ((u - v).abs() <= X_BAR || (u + v).abs() <= X_BAR) && au.max(av) <= 0.9,
        // square frame
        7 => (FRAME_INNER..=FRAME_OUTER).contains(&au.max(av)),
        // two horizontal bars
        8 => ((v - 0.55).abs() <= BAR || (v + 0.55).abs() <= BAR) && au <= 0.9,
        // T: top bar and stem
        _ => {
            ((-0.95..=-0.4).contains(&v) && au <= 0.95)
                || (au <= BAR && (-0.95..=0.95).contains(&v))
        }
    }
}

/// Binary texture of class `class` in absolute pixel coordinates: `true` takes colour c1,
/// `false` colour c2. Period-4 patterns are 2 on / 2 off.
fn texture_bit(class: usize, x: usize, y: usize) -> bool {
    match class {
        // horizontal lines, period 2
        0 => y.is_multiple_of(2),
        // vertical lines, period 2
        1 => x.is_multiple_of(2),
        // 1-px checkerboard
        2 => (x + y).is_multiple_of(2),
        // "/" diagonals, period 4 (constant along x + y, y pointing down)
        3 => (x + y) % 4 < 2,
        // "\" diagonals, period 4
        4 => (x + 3 * y) % 4 < 2,
        // 2-px checkerboard
        5 => (x / 2 + y / 2).is_multiple_of(2),
        // dots every 3 px
        6 => x.is_multiple_of(3) && y.is_multiple_of(3),
        // horizontal lines, period 4
        7 => y % 4 < 2,
        // vertical lines, period 4 (class 8 is not fixed by the design)
        8 => x % 4 < 2,
        // solid
        _ => true,
    }
}

/// Colour of background type `t` out of `k`: a hue wheel with channel values in 0.25–0.75.
fn palette(t: usize, k: usize) -> [f64; 3] {
    let h6 = 6.0 * t as f64 / k as f64;
    let i = h6.floor();
    let f = h6 - i;
    let c = match i as u32 {
        0 => [1.0, f, 0.0],
        1 => [1.0 - f, 1.0, 0.0],
        2 => [0.0, 1.0, f],
        3 => [0.0, 1.0 - f, 1.0],
        4 => [f, 0.0, 1.0],
        _ => [1.0, 0.0, 1.0 - f],
    };
    c.map(|v| 0.25 + 0.5 * v)
}

/// Everything random about one image except its noise.
struct Params {
    class: usize,
    background: Option<usize>,
    c1: [f64; 3],
    center: [f64; 2],
    half: f64,
    phase: f64,
}

fn render(size: usize, classes: usize, p: &Params, noise: &[f64]) -> (Vec<u8>, Vec<u8>) {
    let c2 = p.c1.map(|c| (c + 0.5) % 1.0);
    let stripes = p.background.map(|t| {
        let theta = t as f64 * PI / classes as f64;
        let period = (3 + 2 * (t % 3)) as f64;
        (palette(t, classes), det_cos(theta), det_sin(theta), period)
    });
    let mut rgb = vec![0u8; size * size * 3];
    let mut mask = vec![0u8; size * size];
    for y in 0..size {
        for x in 0..size {
            let u = (x as f64 + 0.5 - p.center[0]) / p.half;
            let v = (y as f64 + 0.5 - p.center[1]) / p.half;
            let i = y * size + x;
            let col = if shape_contains(p.class, u, v) {
                mask[i] = 1;
                if texture_bit(p.class, x, y) {
                    p.c1
                } else {
                    c2
                }
            } else if let Some((base, cos, sin, period)) = stripes {
                let s = STRIPE_AMP
                    * det_sin(TAU * (x as f64 * cos + y as f64 * sin) / period + p.phase);
                base.map(|b| b + s)
            } else {
                [GREY; 3]
            };
            for c in 0..3 {
                let val = (col[c] + noise[3 * i + c]).clamp(0.0, 1.0);
                rgb[3 * i + c] = (val * 255.0 + 0.5).floor() as u8;
            }
        }
    }
    (rgb, mask)
}

/// How a split places objects and picks backgrounds.
enum Placement {
    Centered,
    Corner,
    Half,
}

/// Draws one sample from its own stream. Order of draws: (finetune splits: the class, drawn
/// by the caller), background choice (test sets with a random background), c1, half-size,
/// position, stripe phase, then the noise row-major.
pub(super) fn draw_sample(
    cfg: &SynthConfig,
    split: Split,
    class: usize,
    grey: bool,
    rng: &mut Draw,
) -> Sample {
    let (k, s) = (cfg.classes, cfg.size as f64);
    let background = match split {
        Split::Train => (!grey).then_some(class),
        Split::Finetune | Split::FinetuneVal | Split::Test(TestSet::Id) => Some(class),
        Split::Test(TestSet::FgOnly) => None,
        Split::Test(TestSet::BgSwap) => {
            let t = rng.below(k - 1);
            Some(if t >= class { t + 1 } else { t })
        }
        Split::Test(TestSet::BgRand | TestSet::Loc | TestSet::Size) => Some(rng.below(k)),
    };
    let placement = match split {
        Split::Test(TestSet::Loc) => Placement::Corner,
        Split::Test(TestSet::Size) => Placement::Half,
        _ => Placement::Centered,
    };
    let c1 = [rng.u01(), rng.u01(), rng.u01()];
    let mut half = rng.uniform(HALF_MIN, HALF_MAX) * s;
    let center = match placement {
        Placement::Corner => {
            let corner = rng.below(4);
            let mx = rng.uniform(0.0, CORNER_MARGIN * s);
            let my = rng.uniform(0.0, CORNER_MARGIN * s);
            let cx = if corner & 1 == 0 {
                half + mx
            } else {
                s - half - mx
            };
            let cy = if corner & 2 == 0 {
                half + my
            } else {
                s - half - my
            };
            [cx, cy]
        }
        Placement::Centered | Placement::Half => {
            if matches!(placement, Placement::Half) {
                half *= 0.5;
            }
            let j = JITTER * s;
            [s / 2.0 + rng.uniform(-j, j), s / 2.0 + rng.uniform(-j, j)]
        }
    };
    let phase = if background.is_some() {
        rng.uniform(0.0, TAU)
    } else {
        0.0
    };
    let n = 3 * cfg.size * cfg.size;
    let mut noise = Vec::with_capacity(n + 1);
    while noise.len() < n {
        let (a, b) = rng.gauss_pair();
        noise.push(a * NOISE_STD);
        noise.push(b * NOISE_STD);
    }
    let p = Params {
        class,
        background,
        c1,
        center,
        half,
        phase,
    };
    let (rgb, mask) = render(cfg.size, k, &p, &noise);
    Sample {
        rgb,
        mask,
        class,
        background,
        center,
        half_size: half,
    }
}

#[cfg(test)]
mod tests {
    use super::super::generate;
    use super::super::test_configs::small;
    use super::super::MAX_CLASSES;
    use super::*;
    use std::collections::BTreeSet;

    fn bbox(mask: &[u8], s: usize) -> (usize, usize, usize, usize) {
        let (mut x0, mut y0, mut x1, mut y1) = (s, s, 0, 0);
        for y in 0..s {
            for x in 0..s {
                if mask[y * s + x] == 1 {
                    (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                }
            }
        }
        (x0, y0, x1, y1)
    }

    #[test]
    fn loc_objects_sit_in_a_corner_fully_inside() {
        let cfg = SynthConfig {
            n_test: 200,
            ..small(13)
        };
        let s = cfg.size as f64;
        let mut corners = [0; 4];
        for smp in generate(&cfg, Split::Test(TestSet::Loc)).unwrap() {
            let [cx, cy] = smp.center;
            let r = smp.half_size;
            assert!(cx - r >= 0.0 && cx + r <= s && cy - r >= 0.0 && cy + r <= s);
            let left = cx - r <= CORNER_MARGIN * s;
            let right = cx + r >= s - CORNER_MARGIN * s;
            let top = cy - r <= CORNER_MARGIN * s;
            let bottom = cy + r >= s - CORNER_MARGIN * s;
            assert!((left || right) && (top || bottom));
            corners[usize::from(right) + 2 * usize::from(bottom)] += 1;
            // The drawn object itself reaches the corner region: its mask comes within
            // margin (≤ 1.6 px) + the square's inset (≤ 1.8 px) + 1 of both edges.
            let (x0, y0, x1, y1) = bbox(&smp.mask, cfg.size);
            let band = 5;
            assert!(if left {
                x0 < band
            } else {
                x1 >= cfg.size - band
            });
            assert!(if top {
                y0 < band
            } else {
                y1 >= cfg.size - band
            });
        }
        assert!(corners.iter().all(|&c| c > 25), "{corners:?}");
    }

    #[test]
    fn size_objects_are_half_size() {
        let cfg = SynthConfig {
            n_test: 400,
            ..small(17)
        };
        let size = generate(&cfg, Split::Test(TestSet::Size)).unwrap();
        let id = generate(&cfg, Split::Test(TestSet::Id)).unwrap();
        for s in &size {
            assert!((3.0..=4.5).contains(&s.half_size), "{}", s.half_size);
        }
        let area = |v: &[Sample]| {
            v.iter()
                .map(|s| s.mask.iter().map(|&m| m as f64).sum::<f64>())
                .sum::<f64>()
                / v.len() as f64
        };
        let ratio = area(&size) / area(&id);
        assert!((0.2..0.3).contains(&ratio), "area ratio {ratio}");
    }

    #[test]
    fn objects_cover_about_12_8_percent() {
        let cfg = SynthConfig {
            n_train: 2000,
            ..small(19)
        };
        let train = generate(&cfg, Split::Train).unwrap();
        let fg: usize = train
            .iter()
            .map(|s| s.mask.iter().map(|&m| m as usize).sum::<usize>())
            .sum();
        let frac = fg as f64 / (train.len() * cfg.size * cfg.size) as f64;
        eprintln!("foreground fraction {frac}");
        assert!((frac - 0.128).abs() < 0.004, "foreground fraction {frac}");
        for s in &train {
            assert!((6.08..=8.96).contains(&s.half_size), "{}", s.half_size);
        }
    }

    /// Without noise, the picture is exactly: grey outside the mask, two texture colours inside.
    #[test]
    fn mask_is_exactly_the_drawn_object() {
        let cfg = small(23);
        let s = cfg.size;
        for class in 0..MAX_CLASSES {
            for j in 0..10 {
                let mut rng = Draw::new(j, Split::Test(TestSet::FgOnly), 1);
                let c1 = [rng.u01(), rng.u01(), rng.u01()];
                let p = Params {
                    class,
                    background: None,
                    c1,
                    center: [rng.uniform(12.8, 19.2), rng.uniform(12.8, 19.2)],
                    half: rng.uniform(6.08, 8.96),
                    phase: 0.0,
                };
                let (rgb, mask) = render(s, MAX_CLASSES, &p, &vec![0.0; 3 * s * s]);
                let q = |c: [f64; 3]| c.map(|v| (v * 255.0 + 0.5).floor() as u8);
                let c2 = q(c1.map(|c| (c + 0.5) % 1.0));
                let mut colours = BTreeSet::new();
                for i in 0..s * s {
                    let px = [rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]];
                    if mask[i] == 1 {
                        assert!(px == q(c1) || px == c2, "class {class}");
                        colours.insert(px);
                    } else {
                        assert_eq!(px, [128; 3]);
                    }
                }
                let expected = if class == 9 { 1 } else { 2 };
                assert_eq!(colours.len(), expected, "class {class} texture");
            }
        }
    }
}
