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
//! the few functions of `random.rs`, and the transcendental functions are computed there from
//! IEEE basic operations, so the same seed gives byte-identical pixels on every machine.
//! Each split has its own key derived from (seed, split name) and every sample its own
//! ChaCha stream, so changing `n_test` leaves the training set untouched and parallel
//! generation gives the same output as sequential generation.
//!
//! One file per subject: `split.rs` (the splits, the test sets and which samples each holds),
//! `draw.rs` (one image: shapes, textures, backgrounds, noise), `random.rs` (the portable
//! random streams and maths), `layout.rs` (the folders on disk and their manifest) and
//! `sheet.rs` (the contact sheet for a visual check); this file holds the configuration, the
//! sample type and the errors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

mod draw;
mod layout;
mod random;
mod sheet;
mod split;

pub use draw::NOISE_STD;
pub use layout::{write_layout, Manifest};
pub use sheet::contact_sheet;
pub use split::{Split, TestSet};

use layout::MANIFEST;
use split::generate_split;

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

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
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
    /// Absent from the demo's settings, which give each run its seed.
    #[serde(default)]
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

/// The small configurations the unit tests of every subject share.
#[cfg(test)]
mod test_configs {
    use super::SynthConfig;

    pub(super) fn small(seed: u64) -> SynthConfig {
        SynthConfig {
            n_train: 200,
            n_test: 48,
            seed,
            ..SynthConfig::default()
        }
    }

    pub(super) fn tiny() -> SynthConfig {
        SynthConfig {
            n_train: 40,
            n_test: 16,
            finetune_per_class: 2,
            ..small(31)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_configs::small;
    use super::*;

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
}
