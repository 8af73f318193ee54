//! ImageNet-S919 finetuning pairs: mask decoding, the deterministic 500/414-class split and the
//! train/validation transforms applied jointly to image and mask.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::check::{has_image_extension, CheckReport, SeenDirs};
use crate::error::{DataError, Result};
use crate::labels;
use crate::preprocess::{
    resize_region, to_chw, EvalTransform, Interpolation, Normalization, Plane,
};

/// Id of ImageNet-S's "ignore" label; RobustViT turns it into background.
pub const IGNORE_ID: u16 = 1000;

/// A decoded ImageNet-S mask.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedMask {
    /// 1 where the pixel holds a class id, 0 for "other" (0) and "ignore" (1000).
    pub binary: Plane,
    /// Distinct class ids found (neither 0 nor 1000), sorted.
    pub class_ids: Vec<u16>,
}

/// Decode an ImageNet-S PNG: id = R + 256*G per pixel.
pub fn decode_mask(path: &Path) -> Result<DecodedMask> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_mask_bytes(&bytes, path)
}

/// Largest mask side accepted: ImageNet images are at most a few thousand pixels a side, and
/// a corrupt header must not make the decoder allocate gigabytes.
pub const MAX_MASK_SIDE: u32 = 16384;

/// [`decode_mask`] of bytes already in memory; `path` names them in errors.
pub fn decode_mask_bytes(bytes: &[u8], path: &Path) -> Result<DecodedMask> {
    if bytes.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    let bad = |e: String| DataError::BadMask {
        path: path.to_path_buf(),
        reason: format!("not a readable PNG ({e}); re-download it"),
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_MASK_SIDE);
    limits.max_image_height = Some(MAX_MASK_SIDE);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(e.to_string()))?;
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let mut ids = Vec::new();
    let mut data = Vec::with_capacity((w * h) as usize);
    for p in rgb.as_raw().chunks_exact(3) {
        let id = p[0] as u16 + 256 * p[1] as u16;
        let fg = id != 0 && id != IGNORE_ID;
        if fg && !ids.contains(&id) {
            ids.push(id);
        }
        data.push(if fg { 1.0 } else { 0.0 });
    }
    ids.sort_unstable();
    Ok(DecodedMask {
        binary: Plane::new(w, h, data),
        class_ids: ids,
    })
}

/// How many classes and images go to training and validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitOptions {
    /// The first `num_train_classes` classes train (RobustViT `--num_classes`, 500); the rest
    /// validate (414 of the 914 usable classes).
    pub num_train_classes: usize,
    /// Images per training class (`--num_samples`, 3).
    pub train_per_class: usize,
    /// Images per validation class (1).
    pub val_per_class: usize,
    /// None: sorted wnid order. Some(s): classes shuffled with ChaCha8 seeded by s.
    pub seed: Option<u64>,
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self {
            num_train_classes: 500,
            train_per_class: 3,
            val_per_class: 1,
            seed: None,
        }
    }
}

/// One (image, mask) pair; paths are relative to the image and mask roots so that a split file
/// works on any machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegSample {
    pub wnid: String,
    /// ImageNet-1k index of the folder's wnid (the ground truth used for relevance).
    pub label: u32,
    /// `<wnid>/<name>.png` under the mask root.
    pub mask: String,
    /// `<wnid>/<name>.JPEG` under the image root.
    pub image: String,
}

pub const SPLIT_FORMAT: &str = "robustvit-imagenet-s-split/1";

/// The finetuning split. RobustViT's own split followed unsorted directory order and cannot be
/// reproduced; this one is deterministic and written to a file that every machine reads back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageNetSSplit {
    pub format: String,
    pub options: SplitOptions,
    pub train: Vec<SegSample>,
    pub val: Vec<SegSample>,
}

impl ImageNetSSplit {
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| DataError::SplitFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(|e| DataError::io(path, e))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// [`Self::load`] of text already in memory; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let split: Self = serde_json::from_str(text).map_err(|e| DataError::SplitFile {
            path: path.to_path_buf(),
            reason: format!("not a split file ({e}); create one with ImageNetS::build_split"),
        })?;
        if split.format != SPLIT_FORMAT {
            return Err(DataError::SplitFile {
                path: path.to_path_buf(),
                reason: format!("format {:?}, expected {SPLIT_FORMAT:?}", split.format),
            });
        }
        Ok(split)
    }

    pub fn train_classes(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.train.iter().map(|s| s.wnid.as_str()).collect();
        v.dedup();
        v
    }
}

/// An ImageNet-S919 mask folder paired with an image folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageNetS {
    /// `ImageNetS919/train-semi-segmentation`: `<wnid>/<name>.png`.
    pub masks: PathBuf,
    /// ImageNet `train/` or `ImageNetS919/train-semi`: `<wnid>/<name>.JPEG`.
    pub images: PathBuf,
    /// True when `images` holds exactly the masked images (`train-semi`), so that an image
    /// without a mask is a problem worth reporting; false for the full ImageNet train set.
    pub paired: bool,
}

const IMAGE_EXTS: [&str; 4] = ["JPEG", "jpg", "jpeg", "png"];

/// Mask class folders found on disk.
struct Scan {
    /// Usable classes in sorted order: (wnid, label, mask files sorted).
    classes: Vec<(String, u32, Vec<PathBuf>)>,
    report: CheckReport,
}

impl ImageNetS {
    pub fn new(masks: &Path, images: &Path) -> Self {
        let paired = images
            .file_name()
            .map(|n| n == "train-semi")
            .unwrap_or(false);
        Self {
            masks: masks.to_path_buf(),
            images: images.to_path_buf(),
            paired,
        }
    }

    /// `ImageNetS919/` holding `train-semi/` and `train-semi-segmentation/`.
    pub fn from_root(root: &Path) -> Self {
        Self::new(
            &root.join("train-semi-segmentation"),
            &root.join("train-semi"),
        )
    }

    /// The image that goes with `<wnid>/<stem>.png`, if present.
    pub fn image_for(&self, wnid: &str, stem: &str) -> Option<PathBuf> {
        IMAGE_EXTS
            .iter()
            .map(|e| self.images.join(wnid).join(format!("{stem}.{e}")))
            .find(|p| p.is_file())
    }

    fn layout_err(&self, problem: String) -> DataError {
        DataError::Layout {
            dataset: "ImageNet-S919".into(),
            root: self.masks.clone(),
            problem,
            expected: "train-semi-segmentation/<wnid>/<name>.png (919 wnid folders, from ImageNetS919.zip) next to an image folder <wnid>/<name>.JPEG (ImageNet train/ or ImageNetS919/train-semi)".into(),
        }
    }

    fn scan(&self) -> Result<Scan> {
        if !self.masks.is_dir() {
            return Err(self.layout_err("does not exist or is not a folder".into()));
        }
        if !self.images.is_dir() {
            return Err(self.layout_err(format!(
                "image folder {} does not exist",
                self.images.display()
            )));
        }
        let mut report = CheckReport::new("ImageNet-S919", &self.masks);
        let mut classes = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&self.masks)
            .map_err(|e| DataError::io(&self.masks, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        let mut seen = SeenDirs::default();
        seen.first_visit(&self.masks);
        for entry in entries {
            if !entry.is_dir() {
                report.non_image_files.push(entry);
                continue;
            }
            if !seen.first_visit(&entry) {
                report.linked_folders.push(entry);
                continue;
            }
            let wnid = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&entry)
                .map_err(|e| DataError::io(&entry, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            if labels::IMAGENET_S_MERGED_WNIDS.contains(&wnid.as_str()) {
                report.excluded_class_folders.insert(wnid, files.len());
                continue;
            }
            let Some(cat) = labels::imagenet_s_category(&wnid) else {
                report.unknown_class_folders.push(entry);
                continue;
            };
            let (masks, other): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| {
                f.is_file()
                    && f.extension()
                        .map(|e| e.eq_ignore_ascii_case("png"))
                        .unwrap_or(false)
            });
            report.non_image_files.extend(other);
            if self.paired {
                // Images without a mask (only meaningful when the image folder is train-semi).
                let dir = self.images.join(&wnid);
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    let stems: HashSet<String> = masks
                        .iter()
                        .filter_map(|m| m.file_stem().map(|s| s.to_string_lossy().into_owned()))
                        .collect();
                    let mut lonely: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| has_image_extension(p))
                        .filter(|p| {
                            !p.file_stem()
                                .map(|s| stems.contains(s.to_string_lossy().as_ref()))
                                .unwrap_or(false)
                        })
                        .collect();
                    lonely.sort();
                    report.missing_masks.extend(lonely);
                }
            }
            classes.push((wnid, cat.imagenet_index as u32, masks));
        }
        if classes.is_empty() {
            return Err(self.layout_err("has no ImageNet-S class folders".into()));
        }
        Ok(Scan { classes, report })
    }

    /// Validate one mask and find its image. Ok(sample) or Err(kind of problem).
    fn validate(
        &self,
        wnid: &str,
        label: u32,
        mask: &Path,
        decode_image: bool,
    ) -> Result<SegSample, Problem> {
        let (Some(stem), Some(name)) = (mask.file_stem(), mask.file_name()) else {
            return Err(Problem::BadMask(
                mask.to_path_buf(),
                "has no file name".into(),
            ));
        };
        let stem = stem.to_string_lossy().into_owned();
        let name = name.to_string_lossy().into_owned();
        let m = match decode_mask(mask) {
            Ok(m) => m,
            Err(e) => return Err(Problem::BadMask(mask.to_path_buf(), e.to_string())),
        };
        if m.class_ids.len() != 1 {
            return Err(Problem::BadMask(
                mask.to_path_buf(),
                format!(
                    "{} class ids {:?} (expected exactly one besides 0 and 1000)",
                    m.class_ids.len(),
                    m.class_ids
                ),
            ));
        }
        let Some(image) = self.image_for(wnid, &stem) else {
            return Err(Problem::MissingImage(
                self.images.join(wnid).join(format!("{stem}.JPEG")),
            ));
        };
        if decode_image {
            match crate::preprocess::decode_rgb(&image) {
                Ok(img) if img.dimensions() != (m.binary.width, m.binary.height) => {
                    return Err(Problem::BadMask(
                        mask.to_path_buf(),
                        format!(
                            "mask is {}x{} but its image {} is {}x{}",
                            m.binary.width,
                            m.binary.height,
                            image.display(),
                            img.width(),
                            img.height()
                        ),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(Problem::Unreadable(image, e.to_string())),
            }
        }
        let rel_image = image.strip_prefix(&self.images).unwrap_or(&image);
        Ok(SegSample {
            wnid: wnid.to_string(),
            label,
            mask: format!("{wnid}/{name}"),
            image: rel_image.to_string_lossy().replace('\\', "/"),
        })
    }

    /// Walk every mask and image once, decoding all of them.
    pub fn check(&self) -> Result<CheckReport> {
        let scan = self.scan()?;
        let mut report = scan.report;
        let results: Vec<(String, Vec<Result<SegSample, Problem>>)> = scan
            .classes
            .par_iter()
            .map(|(wnid, label, masks)| {
                (
                    wnid.clone(),
                    masks
                        .iter()
                        .map(|m| self.validate(wnid, *label, m, true))
                        .collect(),
                )
            })
            .collect();
        for (wnid, rs) in results {
            let mut n = 0;
            for r in rs {
                match r {
                    Ok(_) => n += 1,
                    Err(p) => p.record(&mut report),
                }
            }
            report.images_per_class.insert(wnid, n);
        }
        report.decoded = true;
        Ok(report)
    }

    /// Build the deterministic split: usable classes in sorted wnid order (or shuffled by
    /// `opts.seed`), masks in sorted name order, the first valid pairs of each class. Invalid
    /// candidates are skipped and reported.
    pub fn build_split(&self, opts: &SplitOptions) -> Result<(ImageNetSSplit, CheckReport)> {
        let scan = self.scan()?;
        let mut report = scan.report;
        let mut classes = scan.classes;
        if let Some(seed) = opts.seed {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            classes.shuffle(&mut rng);
        }
        let picked: Vec<(Vec<SegSample>, Vec<Problem>)> = classes
            .par_iter()
            .enumerate()
            .map(|(ci, (wnid, label, masks))| {
                let want = if ci < opts.num_train_classes {
                    opts.train_per_class
                } else {
                    opts.val_per_class
                };
                let mut ok = Vec::new();
                let mut bad = Vec::new();
                for m in masks {
                    if ok.len() == want {
                        break;
                    }
                    match self.validate(wnid, *label, m, true) {
                        Ok(s) => ok.push(s),
                        Err(p) => bad.push(p),
                    }
                }
                (ok, bad)
            })
            .collect();
        let mut split = ImageNetSSplit {
            format: SPLIT_FORMAT.into(),
            options: *opts,
            train: Vec::new(),
            val: Vec::new(),
        };
        for (ci, (ok, bad)) in picked.into_iter().enumerate() {
            for p in bad {
                p.record(&mut report);
            }
            report
                .images_per_class
                .insert(classes[ci].0.clone(), ok.len());
            if ci < opts.num_train_classes {
                split.train.extend(ok);
            } else {
                split.val.extend(ok);
            }
        }
        Ok((split, report))
    }

    /// Decode the image and binary mask of a split entry.
    pub fn load_pair(&self, s: &SegSample) -> Result<(RgbImage, Plane)> {
        decode_pair(&self.images.join(&s.image), &self.masks.join(&s.mask))
    }
}

/// Decode an image and its binary mask; a mask of another size than its image is an error
/// (it would be stretched onto the wrong pixels).
pub fn decode_pair(image: &Path, mask: &Path) -> Result<(RgbImage, Plane)> {
    let img = crate::preprocess::decode_rgb(image)?;
    let m = decode_mask(mask)?;
    if img.dimensions() != (m.binary.width, m.binary.height) {
        return Err(DataError::BadMask {
            path: mask.to_path_buf(),
            reason: format!(
                "size {}x{} differs from its image {} ({}x{})",
                m.binary.width,
                m.binary.height,
                image.display(),
                img.width(),
                img.height()
            ),
        });
    }
    Ok((img, m.binary))
}

enum Problem {
    BadMask(PathBuf, String),
    MissingImage(PathBuf),
    Unreadable(PathBuf, String),
}

impl Problem {
    fn record(self, r: &mut CheckReport) {
        match self {
            Problem::BadMask(p, why) => r.bad_masks.push((p, why)),
            Problem::MissingImage(p) => r.missing_images.push(p),
            Problem::Unreadable(p, why) => r.unreadable_images.push((p, why)),
        }
    }
}

/// Size of the training resize (both sides) and of the crops, for 224-pixel models.
pub const TRAIN_RESIZE: u32 = 256;
pub const CROP: u32 = 224;

/// The resize that goes with a crop: 256 for the paper's 224, the same 8/7 ratio for models
/// with another input size.
pub fn resize_for_crop(crop: u32) -> u32 {
    (crop as u64 * TRAIN_RESIZE as u64 / CROP as u64) as u32
}

/// Per-sample RNG: the same (seed, epoch, index) gives the same crop and flip on any thread.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    rng
}

/// Training transform: image and mask resized to 256x256 (image: PIL bilinear; mask: tensor
/// bilinear without antialias, fractional edges kept), the same random 224 crop (top, then left,
/// uniform in 0..=32) and the same horizontal flip (probability 0.5) for both.
pub fn train_transform(
    img: &RgbImage,
    mask: &Plane,
    rng: &mut impl Rng,
    norm: &Normalization,
) -> (Vec<f32>, Plane) {
    train_transform_sized(img, mask, rng, norm, CROP)
}

/// [`train_transform`] for a model whose input is `crop` pixels (resize `crop * 256 / 224`).
pub fn train_transform_sized(
    img: &RgbImage,
    mask: &Plane,
    rng: &mut impl Rng,
    norm: &Normalization,
    crop: u32,
) -> (Vec<f32>, Plane) {
    let size = resize_for_crop(crop);
    let top = rng.random_range(0..=size - crop);
    let left = rng.random_range(0..=size - crop);
    let flip = rng.random::<f64>() > 0.5;
    let mut im = resize_region(
        img,
        size,
        size,
        Interpolation::Bilinear,
        (left, top, crop, crop),
    );
    let mut m = mask.resize_bilinear(size, size).crop(left, top, crop, crop);
    if flip {
        image::imageops::flip_horizontal_in_place(&mut im);
        m = m.flip_horizontal();
    }
    (to_chw(&im, norm), m)
}

/// Validation transform: Resize(256) + CenterCrop(224) for both (image PIL bilinear, mask tensor
/// bilinear, fractional).
pub fn val_transform(img: &RgbImage, mask: &Plane, norm: &Normalization) -> (Vec<f32>, Plane) {
    val_transform_sized(img, mask, norm, CROP)
}

/// [`val_transform`] for a model whose input is `crop` pixels.
pub fn val_transform_sized(
    img: &RgbImage,
    mask: &Plane,
    norm: &Normalization,
    crop: u32,
) -> (Vec<f32>, Plane) {
    let size = resize_for_crop(crop);
    let t = EvalTransform {
        resize: size,
        crop,
        norm: *norm,
        ..EvalTransform::PAPER
    };
    let m = mask.resize_shorter_bilinear(size).center_crop(crop, crop);
    (t.apply(img), m)
}
