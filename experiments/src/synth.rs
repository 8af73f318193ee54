//! Synthetic shortcut dataset of the embedded benchmark (demo design §1).
//!
//! Every image shows one textured object (its class is shape + texture together) on a
//! background. In the training set 80 % of the objects sit on their class's striped,
//! coloured background and 20 % on flat grey, with no conflicting examples. That mix is what
//! puts the pretrained ViT in the regime the benchmark needs: it learns the object (grey
//! images) yet leans on the easier background cue whenever one is present, so relevance
//! finetuning has something to fix. Small changes (conflicting examples, another grey
//! fraction, weaker backgrounds) move the model out of that regime, so the numbers below are
//! the design's and are not tuning knobs.
//!
//! Generation is deterministic from a seed: every random number comes from ChaCha8 through
//! the few functions below, and the transcendental functions are computed here from
//! IEEE basic operations, so the same seed gives byte-identical pixels on every machine.
//! Each split has its own key derived from (seed, split name) and every sample its own
//! ChaCha stream, so changing `n_test` leaves the training set untouched and parallel
//! generation gives the same output as sequential generation.

use std::collections::{BTreeMap, BTreeSet};
use std::f64::consts::{FRAC_PI_2, LN_2, PI, SQRT_2, TAU};
use std::fs;
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The first 10 ImageNet-1k wnids in sorted order: their 1000-way indices are 0..9. Class `k`
/// is stored under `IMAGENET_WNIDS[k]` so that the real ImageNet readers and label maps apply
/// unchanged. They are also the first 10 entries of ImageNet-S919's category list, so their
/// ImageNet-S ids are 1..10.
pub const IMAGENET_WNIDS: [&str; 10] = [
    "n01440764",
    "n01443537",
    "n01484850",
    "n01491361",
    "n01494475",
    "n01496331",
    "n01498041",
    "n01514668",
    "n01514859",
    "n01518878",
];

/// Shapes and textures are defined for this many classes.
pub const MAX_CLASSES: usize = 10;

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

/// Layout format version, stored in the manifest; bump it when file names or encodings change.
const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
/// Contact sheets are drawn at this nearest-neighbour scale so 1-px textures stay visible.
const SHEET_SCALE: usize = 4;
const SHEET_GAP: usize = 2;

/// Errors of the synthetic-data generator; file errors name the file.
#[derive(Debug, Error)]
pub enum SynthError {
    #[error("invalid synthetic-data config: {0}")]
    Config(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot encode PNG: {source}", path.display())]
    Encode {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("{}: bad manifest: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error(
        "refusing to replace {}: it exists and is not a synthetic-data layout (no {MANIFEST}); \
         choose another folder or delete it",
        path.display()
    )]
    NotALayout { path: PathBuf },
}

pub type Result<T> = std::result::Result<T, SynthError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Size and seed of one generated dataset. `Default` is the validated design.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Image side in pixels.
    pub size: usize,
    /// Number of classes K (2..=10).
    pub classes: usize,
    pub n_train: usize,
    /// Images per test set.
    pub n_test: usize,
    /// Fraction of training objects on flat grey; the rest use their class background.
    pub grey_frac: f64,
    /// Masked finetuning images per class.
    pub finetune_per_class: usize,
    /// Masked held-out images per class (`finetune-val`).
    pub finetune_val_per_class: usize,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            size: 32,
            classes: 8,
            n_train: 4000,
            n_test: 1000,
            grey_frac: 0.2,
            finetune_per_class: 3,
            finetune_val_per_class: 1,
            seed: 0,
        }
    }
}

impl SynthConfig {
    /// Rejects configurations the shapes, textures and background types cannot express.
    pub fn validate(&self) -> Result<()> {
        if !(2..=MAX_CLASSES).contains(&self.classes) {
            return Err(SynthError::Config(format!(
                "classes = {} (shapes and textures exist for 2..={MAX_CLASSES})",
                self.classes
            )));
        }
        if !(16..=4096).contains(&self.size) {
            return Err(SynthError::Config(format!(
                "size = {} (16..=4096; the half-size objects of the `size` set need ≥ 16 px)",
                self.size
            )));
        }
        if !(0.0..=1.0).contains(&self.grey_frac) {
            return Err(SynthError::Config(format!(
                "grey_frac = {} (must be in [0, 1])",
                self.grey_frac
            )));
        }
        Ok(())
    }
}

/// The six test sets: each moves one thing away from the training distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TestSet {
    /// Class background, as in training.
    Id,
    /// Uniformly random background type.
    BgRand,
    /// A random wrong class's background: the shortcut points to a wrong class.
    BgSwap,
    /// Flat grey background: object only.
    FgOnly,
    /// Object near a random corner (fully inside), random background.
    Loc,
    /// Object at half size, random background.
    Size,
}

impl TestSet {
    pub const ALL: [TestSet; 6] = [
        TestSet::Id,
        TestSet::BgRand,
        TestSet::BgSwap,
        TestSet::FgOnly,
        TestSet::Loc,
        TestSet::Size,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TestSet::Id => "id",
            TestSet::BgRand => "bg_rand",
            TestSet::BgSwap => "bg_swap",
            TestSet::FgOnly => "fg_only",
            TestSet::Loc => "loc",
            TestSet::Size => "size",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// One split of the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    /// The first `finetune_per_class` images of each class of a fresh id draw, with masks.
    Finetune,
    /// Held-out masked images from another fresh id draw.
    FinetuneVal,
    Test(TestSet),
}

impl Split {
    /// Every split in the order they are generated and hashed.
    pub fn all() -> Vec<Split> {
        let mut v = vec![Split::Train, Split::Finetune, Split::FinetuneVal];
        v.extend(TestSet::ALL.into_iter().map(Split::Test));
        v
    }

    /// Stable name; it also keys the split's random stream, so it must never change.
    pub fn name(self) -> String {
        match self {
            Split::Train => "train".into(),
            Split::Finetune => "finetune".into(),
            Split::FinetuneVal => "finetune-val".into(),
            Split::Test(t) => format!("test/{}", t.name()),
        }
    }

    /// Folder of the images and, for masked splits, of the ImageNet-S masks.
    fn dirs(self) -> (String, Option<String>) {
        match self {
            Split::Train => ("train".into(), None),
            Split::Finetune => ("finetune/images".into(), Some("finetune/masks".into())),
            Split::FinetuneVal => (
                "finetune-val/images".into(),
                Some("finetune-val/masks".into()),
            ),
            Split::Test(t) => (
                format!("test/{}", t.name()),
                Some(format!("test/{}-masks", t.name())),
            ),
        }
    }
}

/// One generated image.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// size × size × 3, row-major, HWC.
    pub rgb: Vec<u8>,
    /// size × size, 1 on the object, 0 elsewhere; exactly the pixels drawn with the texture.
    pub mask: Vec<u8>,
    pub class: usize,
    /// Background type, `None` for flat grey.
    pub background: Option<usize>,
    /// Object centre (x, y) in pixels, pixel centres at +0.5.
    pub center: [f64; 2],
    /// Object half-size in pixels.
    pub half_size: f64,
}

/// Generate one split in memory.
pub fn generate(cfg: &SynthConfig, split: Split) -> Result<Vec<Sample>> {
    cfg.validate()?;
    Ok(generate_split(cfg, split))
}

/// ImageNet-S919 id of class `k` as stored in masks (1-based category position).
pub fn imagenet_s_id(class: usize) -> u16 {
    class as u16 + 1
}

// ---------------------------------------------------------------------------------------
// Random numbers and portable maths

/// ChaCha8 output turned into the few distributions needed, with fixed algorithms so the
/// streams do not depend on the `rand` version.
struct Draw(ChaCha8Rng);

impl Draw {
    /// Key = (seed, FNV-1a of the split name): distinct for every (seed, split) pair.
    fn new(seed: u64, split: Split, stream: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&fnv1a(FNV_OFFSET, split.name().as_bytes()).to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(stream);
        Draw(rng)
    }

    /// Uniform on [0, 1) with 53 random bits.
    fn u01(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.u01()
    }

    /// Unbiased integer in 0..n (rejection sampling).
    fn below(&mut self, n: usize) -> usize {
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
    fn gauss_pair(&mut self) -> (f64, f64) {
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

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// sin from basic IEEE operations (libm's last-bit differences between platforms could flip
/// a quantised pixel). Accurate to ~1e-15 for the arguments used here.
fn det_sin(x: f64) -> f64 {
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

fn det_cos(x: f64) -> f64 {
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

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64: a few lines, no dependency, good enough to detect changed or corrupted data.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

// ---------------------------------------------------------------------------------------
// Drawing

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
fn draw_sample(
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

fn sample_stream(cfg: &SynthConfig, split: Split, index: usize) -> Draw {
    // Stream 0 is the split-level plan; sample i uses stream i + 1.
    Draw::new(cfg.seed, split, index as u64 + 1)
}

fn generate_split(cfg: &SynthConfig, split: Split) -> Vec<Sample> {
    let k = cfg.classes;
    match split {
        Split::Train => {
            // Exactly round(grey_frac·n) grey images, spread over the classes (class i % K,
            // grey for the first n_grey), then shuffled so no prefix is special.
            let n = cfg.n_train;
            let n_grey = (cfg.grey_frac * n as f64).round() as usize;
            let mut plan: Vec<(usize, bool)> = (0..n).map(|i| (i % k, i < n_grey)).collect();
            Draw::new(cfg.seed, split, 0).shuffle(&mut plan);
            plan.into_par_iter()
                .enumerate()
                .map(|(i, (class, grey))| {
                    let mut rng = sample_stream(cfg, split, i);
                    draw_sample(cfg, split, class, grey, &mut rng)
                })
                .collect()
        }
        Split::Test(_) => (0..cfg.n_test)
            .into_par_iter()
            .map(|i| {
                let mut rng = sample_stream(cfg, split, i);
                draw_sample(cfg, split, i % k, false, &mut rng)
            })
            .collect(),
        Split::Finetune | Split::FinetuneVal => {
            // A fresh id draw with uniformly random classes; keep the first `per` of each.
            let per = if split == Split::Finetune {
                cfg.finetune_per_class
            } else {
                cfg.finetune_val_per_class
            };
            let mut chosen: Vec<Vec<usize>> = vec![Vec::new(); k];
            let mut i = 0;
            while chosen.iter().any(|c| c.len() < per) {
                let class = sample_stream(cfg, split, i).below(k);
                if chosen[class].len() < per {
                    chosen[class].push(i);
                }
                i += 1;
            }
            let picks: Vec<usize> = chosen.into_iter().flatten().collect();
            picks
                .into_par_iter()
                .map(|i| {
                    let mut rng = sample_stream(cfg, split, i);
                    // Re-draw the class so the stream continues exactly as in the id draw.
                    let class = rng.below(k);
                    draw_sample(cfg, split, class, false, &mut rng)
                })
                .collect()
        }
    }
}

// ---------------------------------------------------------------------------------------
// On-disk layout

/// Description of a written layout, stored as `manifest.json` at its root.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub config: SynthConfig,
    /// Folder name of class k.
    pub wnids: Vec<String>,
    /// Images per split, keyed by [`Split::name`].
    pub counts: BTreeMap<String, usize>,
    /// Number of files besides the manifest.
    pub files: usize,
    /// FNV-1a 64 (hex) over the generated pixels, masks, classes and backgrounds: equal
    /// iff the generator produces the same data for this config.
    pub content_hash: String,
    /// FNV-1a 64 (hex) over the relative paths and bytes of all written files.
    pub files_hash: String,
    /// True when `write_layout` found this layout already in place and left it untouched.
    #[serde(skip)]
    pub reused: bool,
}

impl Manifest {
    pub fn read(root: &Path) -> Result<Self> {
        let path = root.join(MANIFEST);
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map_err(|e| SynthError::Manifest {
            path,
            reason: e.to_string(),
        })
    }
}

/// One file to write: a sample's image or its ImageNet-S mask.
struct FileSpec<'a> {
    rel: String,
    sample: &'a Sample,
    mask: bool,
}

fn generate_all(cfg: &SynthConfig) -> Vec<(Split, Vec<Sample>)> {
    Split::all()
        .into_iter()
        .map(|s| (s, generate_split(cfg, s)))
        .collect()
}

fn content_hash(all: &[(Split, Vec<Sample>)]) -> u64 {
    let mut h = FNV_OFFSET;
    for (split, samples) in all {
        h = fnv1a(h, split.name().as_bytes());
        h = fnv1a(h, &(samples.len() as u64).to_le_bytes());
        for s in samples {
            h = fnv1a(h, &(s.class as u64).to_le_bytes());
            h = fnv1a(
                h,
                &s.background.map_or(u64::MAX, |b| b as u64).to_le_bytes(),
            );
            h = fnv1a(h, &s.rgb);
            h = fnv1a(h, &s.mask);
        }
    }
    h
}

/// Files in the layout: `<dir>/<wnid>/<wnid>_<i>.png`, i counting per class within a split.
fn file_specs(all: &[(Split, Vec<Sample>)]) -> Vec<FileSpec<'_>> {
    let mut specs = Vec::new();
    for (split, samples) in all {
        let (img_dir, mask_dir) = split.dirs();
        let mut counter = [0usize; MAX_CLASSES];
        for s in samples {
            let wnid = IMAGENET_WNIDS[s.class];
            let name = format!("{wnid}/{wnid}_{}.png", counter[s.class]);
            counter[s.class] += 1;
            specs.push(FileSpec {
                rel: format!("{img_dir}/{name}"),
                sample: s,
                mask: false,
            });
            if let Some(d) = &mask_dir {
                specs.push(FileSpec {
                    rel: format!("{d}/{name}"),
                    sample: s,
                    mask: true,
                });
            }
        }
    }
    specs
}

fn rel_path(root: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(root.to_path_buf(), |p, c| p.join(c))
}

fn encode_png(path: &Path, size: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    PngEncoder::new(&mut buf)
        .write_image(rgb, size as u32, size as u32, ExtendedColorType::Rgb8)
        .map_err(|source| SynthError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(buf)
}

/// ImageNet-S encoding: RGB with id = R + 256·G, 0 = background.
fn mask_rgb(s: &Sample) -> Vec<u8> {
    let id = imagenet_s_id(s.class);
    let fg = [(id & 0xff) as u8, (id >> 8) as u8, 0];
    s.mask
        .iter()
        .flat_map(|&m| if m == 1 { fg } else { [0; 3] })
        .collect()
}

fn combine_file_hashes(mut hashes: Vec<(String, u64)>) -> u64 {
    hashes.sort();
    hashes.into_iter().fold(FNV_OFFSET, |h, (rel, fh)| {
        let h = fnv1a(h, rel.as_bytes());
        let h = fnv1a(h, &[0]);
        fnv1a(h, &fh.to_le_bytes())
    })
}

fn counts_of(all: &[(Split, Vec<Sample>)]) -> BTreeMap<String, usize> {
    all.iter().map(|(s, v)| (s.name(), v.len())).collect()
}

/// Relative paths (with `/`) of all files under `root` except the manifest.
fn list_files(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            if path.is_dir() {
                stack.push((path, rel));
            } else if rel != MANIFEST {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Does `root` hold exactly the files `manifest` and `specs` describe, with unchanged bytes?
fn layout_intact(root: &Path, manifest: &Manifest, specs: &[FileSpec]) -> Result<bool> {
    let mut expected: Vec<&str> = specs.iter().map(|f| f.rel.as_str()).collect();
    expected.sort_unstable();
    if list_files(root)? != expected {
        return Ok(false);
    }
    let hashes = specs
        .par_iter()
        .map(|f| {
            let path = rel_path(root, &f.rel);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            Ok((f.rel.clone(), fnv1a(FNV_OFFSET, &bytes)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(format!("{:016x}", combine_file_hashes(hashes)) == manifest.files_hash)
}

/// Write the dataset under `root` in the layouts of the real datasets:
///
/// - `train/<wnid>/<wnid>_<i>.png` (ImageNet train layout)
/// - `finetune/{images,masks}/<wnid>/<wnid>_<i>.png` and the same under `finetune-val/`
///   (ImageNet-S919 `train-semi-segmentation` layout, masks with id = R + 256·G)
/// - `test/<set>/<wnid>/<wnid>_<i>.png` (ImageNet val layout) and masks under
///   `test/<set>-masks/`
/// - `manifest.json`
///
/// Images are lossless PNG: JPEG would destroy the 1–2 px textures. An existing layout is
/// reused when its manifest has this config and the generator's content hash, and its files
/// are exactly the expected ones with the recorded bytes. Otherwise the layout is written
/// into `<root>.tmp-<pid>` and renamed into place, so an interrupted run never leaves a
/// half-written `root` that looks complete. `root` is replaced only if it is empty or holds a
/// manifest.
pub fn write_layout(root: &Path, cfg: &SynthConfig) -> Result<Manifest> {
    cfg.validate()?;
    let all = generate_all(cfg);
    let content = format!("{:016x}", content_hash(&all));
    let specs = file_specs(&all);

    if let Some(m) = reusable(root, cfg, &content, &specs)? {
        return Ok(m);
    }
    if root.exists() && !replaceable(root)? {
        return Err(SynthError::NotALayout {
            path: root.to_path_buf(),
        });
    }

    let name = root
        .file_name()
        .ok_or_else(|| SynthError::Config(format!("{} has no folder name", root.display())))?;
    let tmp = root.with_file_name(format!(
        "{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    let dirs: BTreeSet<PathBuf> = specs
        .iter()
        .filter_map(|f| rel_path(&tmp, &f.rel).parent().map(Path::to_path_buf))
        .collect();
    for d in &dirs {
        fs::create_dir_all(d).map_err(io_err(d))?;
    }
    let size = cfg.size;
    let hashes = specs
        .par_iter()
        .map(|f| {
            let path = rel_path(&tmp, &f.rel);
            let bytes = if f.mask {
                encode_png(&path, size, &mask_rgb(f.sample))?
            } else {
                encode_png(&path, size, &f.sample.rgb)?
            };
            fs::write(&path, &bytes).map_err(io_err(&path))?;
            Ok((f.rel.clone(), fnv1a(FNV_OFFSET, &bytes)))
        })
        .collect::<Result<Vec<_>>>()?;

    let manifest = Manifest {
        format: FORMAT,
        config: cfg.clone(),
        wnids: IMAGENET_WNIDS[..cfg.classes]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        counts: counts_of(&all),
        files: specs.len(),
        content_hash: content,
        files_hash: format!("{:016x}", combine_file_hashes(hashes)),
        reused: false,
    };
    let mpath = tmp.join(MANIFEST);
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    fs::write(&mpath, json + "\n").map_err(io_err(&mpath))?;

    if root.exists() {
        fs::remove_dir_all(root).map_err(io_err(root))?;
    }
    if let Err(e) = fs::rename(&tmp, root) {
        // Another process may have put the same layout in place meanwhile.
        if let Some(m) = reusable(root, cfg, &manifest.content_hash, &specs)? {
            let _ = fs::remove_dir_all(&tmp);
            return Ok(m);
        }
        return Err(io_err(root)(e));
    }
    Ok(manifest)
}

fn reusable(
    root: &Path,
    cfg: &SynthConfig,
    content: &str,
    specs: &[FileSpec],
) -> Result<Option<Manifest>> {
    if !root.join(MANIFEST).is_file() {
        return Ok(None);
    }
    let Ok(mut m) = Manifest::read(root) else {
        return Ok(None);
    };
    if m.format != FORMAT
        || m.config != *cfg
        || m.content_hash != content
        || !layout_intact(root, &m, specs)?
    {
        return Ok(None);
    }
    m.reused = true;
    Ok(Some(m))
}

fn replaceable(root: &Path) -> Result<bool> {
    if !root.is_dir() {
        return Ok(false);
    }
    if root.join(MANIFEST).is_file() {
        return Ok(true);
    }
    Ok(fs::read_dir(root).map_err(io_err(root))?.next().is_none())
}

/// Render a contact sheet for a visual check: one row per split (train, the six test sets,
/// finetune), one column per class (its first image in that split), and a last row with the
/// id set's masks. Drawn ×4 with nearest neighbour so the 1-px textures stay visible.
pub fn contact_sheet(cfg: &SynthConfig, path: &Path) -> Result<()> {
    cfg.validate()?;
    let mut splits = vec![Split::Train];
    splits.extend(TestSet::ALL.into_iter().map(Split::Test));
    splits.push(Split::Finetune);
    let (k, s) = (cfg.classes, cfg.size);
    let mut rows: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
    for split in splits {
        let samples = generate_split(cfg, split);
        rows.push(
            (0..k)
                .map(|c| samples.iter().find(|x| x.class == c).map(|x| x.rgb.clone()))
                .collect(),
        );
        if split == Split::Test(TestSet::Id) {
            let masks = (0..k)
                .map(|c| {
                    samples
                        .iter()
                        .find(|x| x.class == c)
                        .map(|x| x.mask.iter().flat_map(|&m| [m * 255; 3]).collect())
                })
                .collect();
            rows.push(masks);
        }
    }
    let cell = s * SHEET_SCALE + SHEET_GAP;
    let (w, h) = (k * cell + SHEET_GAP, rows.len() * cell + SHEET_GAP);
    let mut out = vec![255u8; w * h * 3];
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let Some(img) = img else { continue };
            let (ox, oy) = (SHEET_GAP + c * cell, SHEET_GAP + r * cell);
            for y in 0..s * SHEET_SCALE {
                for x in 0..s * SHEET_SCALE {
                    let src = 3 * ((y / SHEET_SCALE) * s + x / SHEET_SCALE);
                    let dst = 3 * ((oy + y) * w + ox + x);
                    out[dst..dst + 3].copy_from_slice(&img[src..src + 3]);
                }
            }
        }
    }
    let mut buf = Vec::new();
    PngEncoder::new(&mut buf)
        .write_image(&out, w as u32, h as u32, ExtendedColorType::Rgb8)
        .map_err(|source| SynthError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    fs::write(path, buf).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SynthConfig {
        SynthConfig {
            n_train: 200,
            n_test: 48,
            seed,
            ..SynthConfig::default()
        }
    }

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

    #[test]
    fn deterministic_and_seed_dependent() {
        for split in Split::all() {
            let a = generate(&small(1), split).unwrap();
            let b = generate(&small(1), split).unwrap();
            let c = generate(&small(2), split).unwrap();
            assert_eq!(a, b, "{}", split.name());
            assert_ne!(a, c, "{}", split.name());
        }
    }

    #[test]
    fn splits_have_independent_streams() {
        let base = small(5);
        let more_test = SynthConfig {
            n_test: 80,
            ..base.clone()
        };
        let more_train = SynthConfig {
            n_train: 240,
            ..base.clone()
        };
        assert_eq!(
            generate(&base, Split::Train).unwrap(),
            generate(&more_test, Split::Train).unwrap()
        );
        for split in [Split::Finetune, Split::Test(TestSet::BgSwap)] {
            let a = generate(&base, split).unwrap();
            let b = generate(&more_train, split).unwrap();
            assert_eq!(a, b);
        }
        // A longer test set extends the shorter one.
        let a = generate(&base, Split::Test(TestSet::Loc)).unwrap();
        let b = generate(&more_test, Split::Test(TestSet::Loc)).unwrap();
        assert_eq!(a[..], b[..a.len()]);
        // Different splits do not share images.
        let id = generate(&base, Split::Test(TestSet::Id)).unwrap();
        let ft = generate(&base, Split::Finetune).unwrap();
        assert!(ft.iter().all(|f| id.iter().all(|t| t.rgb != f.rgb)));
    }

    #[test]
    fn train_is_balanced_with_exact_grey_fraction() {
        for (n, k) in [(200, 8), (203, 8), (4000, 8), (95, 10)] {
            let cfg = SynthConfig {
                n_train: n,
                classes: k,
                ..small(7)
            };
            let train = generate(&cfg, Split::Train).unwrap();
            assert_eq!(train.len(), n);
            let mut per_class = vec![0usize; k];
            let mut grey_per_class = vec![0usize; k];
            for s in &train {
                per_class[s.class] += 1;
                match s.background {
                    None => grey_per_class[s.class] += 1,
                    Some(b) => assert_eq!(b, s.class, "rho = 1: no conflicting examples"),
                }
            }
            let (lo, hi) = (n / k, n.div_ceil(k));
            assert!(
                per_class.iter().all(|&c| c == lo || c == hi),
                "{per_class:?}"
            );
            let grey: usize = grey_per_class.iter().sum();
            assert!((grey as f64 - 0.2 * n as f64).abs() <= 1.0, "{grey} of {n}");
            let (glo, ghi) = (grey / k, grey.div_ceil(k));
            assert!(grey_per_class.iter().all(|&c| c == glo || c == ghi));
            // The shuffle leaves no all-grey prefix.
            assert!(train[..n / 4].iter().any(|s| s.background.is_some()));
        }
    }

    #[test]
    fn test_set_backgrounds() {
        let cfg = SynthConfig {
            n_test: 400,
            ..small(11)
        };
        let k = cfg.classes;
        for t in TestSet::ALL {
            let set = generate(&cfg, Split::Test(t)).unwrap();
            assert_eq!(set.len(), 400);
            let mut per_class = vec![0; k];
            let mut seen = vec![0; k];
            for s in &set {
                per_class[s.class] += 1;
                if let Some(b) = s.background {
                    seen[b] += 1;
                }
                match t {
                    TestSet::Id => assert_eq!(s.background, Some(s.class)),
                    TestSet::FgOnly => assert_eq!(s.background, None),
                    TestSet::BgSwap => assert_ne!(s.background.unwrap(), s.class),
                    _ => assert!(s.background.unwrap() < k),
                }
            }
            assert!(per_class.iter().all(|&c| c == 50), "{per_class:?}");
            if !matches!(t, TestSet::Id | TestSet::FgOnly) {
                // Random backgrounds use every type.
                assert!(seen.iter().all(|&c| c > 20), "{}: {seen:?}", t.name());
            }
        }
    }

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

    #[test]
    fn finetune_sets_are_first_per_class_of_id_draws() {
        let cfg = small(29);
        let ft = generate(&cfg, Split::Finetune).unwrap();
        let val = generate(&cfg, Split::FinetuneVal).unwrap();
        assert_eq!(ft.len(), 24);
        assert_eq!(val.len(), 8);
        for (i, s) in ft.iter().enumerate() {
            assert_eq!(s.class, i / 3);
            assert_eq!(s.background, Some(s.class));
        }
        assert!(ft.iter().all(|f| val.iter().all(|v| v.rgb != f.rgb)));
    }

    #[test]
    fn config_is_validated() {
        for cfg in [
            SynthConfig {
                classes: 11,
                ..small(0)
            },
            SynthConfig {
                classes: 1,
                ..small(0)
            },
            SynthConfig {
                size: 8,
                ..small(0)
            },
            SynthConfig {
                grey_frac: 1.5,
                ..small(0)
            },
        ] {
            assert!(matches!(
                generate(&cfg, Split::Train),
                Err(SynthError::Config(_))
            ));
        }
    }

    fn tiny() -> SynthConfig {
        SynthConfig {
            n_train: 40,
            n_test: 16,
            finetune_per_class: 2,
            ..small(31)
        }
    }

    fn decode(path: &Path) -> Vec<u8> {
        let img = image::open(path).unwrap();
        assert!(matches!(img, image::DynamicImage::ImageRgb8(_)));
        img.to_rgb8().into_raw()
    }

    #[test]
    fn layout_decodes_back_to_the_samples() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("synth");
        let cfg = tiny();
        let m = write_layout(&root, &cfg).unwrap();
        assert!(!m.reused);
        assert_eq!(m.counts["train"], 40);
        assert_eq!(m.counts["finetune"], 16);
        assert_eq!(m.counts["finetune-val"], 8);
        assert_eq!(m.counts["test/bg_swap"], 16);
        // images: 40 + 16 + 8 + 6·16; masks for all but train.
        assert_eq!(m.files, 40 + 2 * (16 + 8 + 6 * 16));
        assert_eq!(list_files(&root).unwrap().len(), m.files);
        assert_eq!(Manifest::read(&root).unwrap(), m);

        for split in Split::all() {
            let samples = generate(&cfg, split).unwrap();
            let (img_dir, mask_dir) = split.dirs();
            let mut counter = [0usize; MAX_CLASSES];
            for s in &samples {
                let wnid = IMAGENET_WNIDS[s.class];
                let name = format!("{wnid}/{wnid}_{}.png", counter[s.class]);
                counter[s.class] += 1;
                let rgb = decode(&rel_path(&root, &format!("{img_dir}/{name}")));
                assert_eq!(rgb, s.rgb, "{img_dir}/{name}");
                if let Some(d) = &mask_dir {
                    let m = decode(&rel_path(&root, &format!("{d}/{name}")));
                    for (px, &fg) in m.chunks_exact(3).zip(&s.mask) {
                        let id = u16::from(px[0]) + 256 * u16::from(px[1]);
                        assert_eq!(id, if fg == 1 { s.class as u16 + 1 } else { 0 });
                        assert_eq!(px[2], 0);
                    }
                }
            }
            for (c, &n) in counter.iter().enumerate().take(cfg.classes) {
                let dir = rel_path(&root, &format!("{img_dir}/{}", IMAGENET_WNIDS[c]));
                assert_eq!(fs::read_dir(dir).unwrap().count(), n);
            }
        }
        assert!(
            !rel_path(&root, "train/n01514859").exists(),
            "only K classes"
        );
    }

    #[cfg(unix)]
    #[test]
    fn layout_is_reused_verified_and_reproducible() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("synth");
        let cfg = tiny();
        let first = write_layout(&root, &cfg).unwrap();
        let ino = fs::metadata(&root).unwrap().ino();

        let again = write_layout(&root, &cfg).unwrap();
        assert!(again.reused);
        assert_eq!(fs::metadata(&root).unwrap().ino(), ino, "left in place");

        // A changed file is detected and the layout regenerated.
        let f = rel_path(&root, "test/id/n01440764/n01440764_0.png");
        fs::write(&f, b"not a png").unwrap();
        let fixed = write_layout(&root, &cfg).unwrap();
        assert!(!fixed.reused);
        assert_eq!(fixed.files_hash, first.files_hash);
        // So is an extra file a reader would pick up.
        fs::write(rel_path(&root, "train/n01440764/extra.png"), b"x").unwrap();
        assert!(!write_layout(&root, &cfg).unwrap().reused);
        assert!(!rel_path(&root, "train/n01440764/extra.png").exists());

        // Another config replaces the layout.
        let other = SynthConfig { seed: 32, ..cfg };
        let m = write_layout(&root, &other).unwrap();
        assert!(!m.reused);
        assert_ne!(m.content_hash, first.content_hash);

        // Same seed in another folder: byte-identical files.
        let root2 = dir.path().join("synth2");
        let m2 = write_layout(&root2, &other).unwrap();
        assert_eq!(m2.files_hash, m.files_hash);
        let files = list_files(&root).unwrap();
        assert_eq!(files, list_files(&root2).unwrap());
        for rel in files {
            assert_eq!(
                fs::read(rel_path(&root, &rel)).unwrap(),
                fs::read(rel_path(&root2, &rel)).unwrap()
            );
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn foreign_folders_are_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("photos");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("holiday.jpg"), b"precious").unwrap();
        let err = write_layout(&root, &tiny()).unwrap_err();
        assert!(matches!(err, SynthError::NotALayout { .. }));
        assert!(err.to_string().contains("photos"));
        assert_eq!(fs::read(root.join("holiday.jpg")).unwrap(), b"precious");
        // An empty folder is fine.
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        write_layout(&empty, &tiny()).unwrap();
    }

    #[test]
    fn contact_sheet_has_one_row_per_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sheet.png");
        contact_sheet(&tiny(), &path).unwrap();
        let img = image::open(&path).unwrap();
        let cell = 32 * SHEET_SCALE + SHEET_GAP;
        assert_eq!(img.width() as usize, 8 * cell + SHEET_GAP);
        assert_eq!(img.height() as usize, 9 * cell + SHEET_GAP);
    }
}
