//! The training source: ImageNet-S (image, mask) pairs or plain class folders, with the paired
//! image/mask transforms (the shared random crop and flip). Training, validation and the
//! relevance strips all draw their batches from it through [`crate::loader::Loader`], so a
//! preprocessing change lands in one place.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::imagenet_s::{
    decode_pair, resize_for_crop, sample_rng, train_transform_sized, val_transform_sized,
    ImageNetS, SegSample,
};
use crate::loader::{Item, SampleSource};
use crate::preprocess::{decode_rgb, to_chw, EvalTransform, Normalization, Plane};

/// One training or validation example with its absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainExample {
    pub image: PathBuf,
    /// The ImageNet-S mask; none for class-folder images.
    pub mask: Option<PathBuf>,
    /// ImageNet-1k index.
    pub label: u32,
}

/// The examples of split entries of `root`.
pub fn seg_examples(root: &ImageNetS, samples: &[SegSample]) -> Vec<TrainExample> {
    samples
        .iter()
        .map(|s| TrainExample {
            image: root.images.join(&s.image),
            mask: Some(root.masks.join(&s.mask)),
            label: s.label,
        })
        .collect()
}

const CLASS_FOLDERS: &str = "<wnid>/<image> class folders";

/// Every image of an ImageNet-style class folder (`<wnid>/<file>`), labelled by its wnid, in
/// sorted order; `limit_classes` keeps the first classes only.
pub fn folder_examples(root: &Path, limit_classes: Option<usize>) -> Result<Vec<TrainExample>> {
    let layout = |problem: String| DataError::Layout {
        dataset: "image".into(),
        root: root.to_path_buf(),
        problem,
        expected: CLASS_FOLDERS.into(),
    };
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| layout(format!("cannot be read ({e})")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if let Some(k) = limit_classes {
        classes.truncate(k);
    }
    let mut out = Vec::new();
    for dir in classes {
        let wnid = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(label) = crate::labels::wnid_to_index(&wnid) else {
            return Err(layout(format!(
                "{} is not an ImageNet class folder (unknown wnid {wnid})",
                dir.display()
            )));
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| DataError::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| crate::check::has_image_extension(p))
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|image| TrainExample {
            image,
            mask: None,
            label: label as u32,
        }));
    }
    if out.is_empty() {
        return Err(layout("holds no images in <wnid>/ class folders".into()));
    }
    Ok(out)
}

/// How a training source turns an example into model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairTransform {
    /// Normalised at the size it is stored (data already at the model's input size).
    Plain,
    /// The paper's: training pairs resized to `crop * 8/7` with the same random crop and flip
    /// for image and mask; validation pairs resized and centre-cropped; images without a mask
    /// take the evaluation transform (no augmentation).
    Paper,
}

/// Training or validation examples with their transform.
#[derive(Debug, Clone)]
pub struct TrainSource {
    pub examples: Vec<TrainExample>,
    pub transform: PairTransform,
    pub norm: Normalization,
    /// The model's input side.
    pub crop: u32,
    /// `Some((seed, epoch))`: training augmentation, the crop and flip of example `i` drawn
    /// from [`sample_rng`]`(seed, epoch, i)` so that they do not depend on thread timing or on
    /// a resume; `None`: the validation transform.
    pub augment: Option<(u64, u64)>,
}

impl TrainSource {
    /// The transformed CHW pixels of example `index`, its mask plane, and their size.
    fn prepare(&self, index: usize) -> Result<(Vec<f32>, Option<Plane>, u32, u32)> {
        let ex = &self.examples[index];
        let (img, mask) = match &ex.mask {
            Some(m) => {
                let (img, m) = decode_pair(&ex.image, m)?;
                (img, Some(m))
            }
            None => (decode_rgb(&ex.image)?, None),
        };
        let crop = self.crop;
        Ok(match (self.transform, mask) {
            (PairTransform::Plain, m) => (to_chw(&img, &self.norm), m, img.width(), img.height()),
            (PairTransform::Paper, Some(m)) => {
                let (x, m) = match self.augment {
                    Some((seed, epoch)) => {
                        let mut rng = sample_rng(seed, epoch, index as u64);
                        train_transform_sized(&img, &m, &mut rng, &self.norm, crop)
                    }
                    None => val_transform_sized(&img, &m, &self.norm, crop),
                };
                (x, Some(m), crop, crop)
            }
            (PairTransform::Paper, None) => {
                let t = EvalTransform {
                    norm: self.norm,
                    resize: resize_for_crop(crop),
                    crop,
                    ..EvalTransform::PAPER
                };
                (t.apply(&img), None, crop, crop)
            }
        })
    }
}

impl SampleSource for TrainSource {
    fn len(&self) -> usize {
        self.examples.len()
    }

    fn load(&self, index: usize) -> Result<Item> {
        let (image, mask, width, height) = self.prepare(index)?;
        let ex = &self.examples[index];
        Ok(Item {
            image,
            mask: mask.map(|m| m.data),
            height,
            width,
            label: ex.label,
            targets: vec![ex.label],
            path: ex.image.clone(),
        })
    }

    fn path(&self, index: usize) -> PathBuf {
        self.examples[index].image.clone()
    }
}
