//! The segmentation benchmark's readers: ImageNet-Segmentation's `gtsegs_ijcv.mat` ([`mat`])
//! and folders of images with ImageNet-S-encoded masks, both as loader sources preprocessed as
//! the reference test does (robustvit.md §5): the image resized to exactly the model's input
//! size (PIL bilinear, aspect not kept) and normalised with mean = std = 0.5, the mask resized
//! with PIL's nearest neighbour.

pub mod mat;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::GrayImage;

use crate::check::{has_image_extension, SeenDirs};
use crate::loader::Item;
use crate::preprocess::{segtest_transform, Normalization, Plane};
use crate::{DataError, SampleSource};

use mat::GtSegs;

/// The normalisation of the reference segmentation test, for every model.
pub const SEG_NORM: Normalization = Normalization::HALF;

fn item(image: Vec<f32>, mask: Plane, size: u32, path: PathBuf) -> Item {
    Item {
        image,
        mask: Some(mask.data),
        height: size,
        width: size,
        label: 0,
        targets: vec![0],
        path,
    }
}

/// Nearest-neighbour resize of a 0/1 mask to `size`×`size` with PIL's rule, as the reference
/// test applies `Resize((224, 224), Image.NEAREST)` to the mask as an 8-bit PIL image.
pub fn mask_to_size(mask: &GrayImage, size: u32) -> Plane {
    let plane = Plane::new(
        mask.width(),
        mask.height(),
        mask.as_raw().iter().map(|&v| f32::from(v)).collect(),
    );
    plane.resize_nearest_pil(size, size)
}

/// `gtsegs_ijcv.mat` as a loader source, sharing one open file between models and loader
/// threads (the reader only reads). An entry the reader refuses (e.g. a mask that is not 0/1)
/// is skipped and named by the loader as `FILE#INDEX`.
pub struct GtSegsSource {
    pub gtsegs: Arc<GtSegs>,
    /// Entries to use (all, or a `--limit` subset).
    pub indices: Vec<usize>,
    pub size: u32,
}

impl SampleSource for GtSegsSource {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn load(&self, index: usize) -> crate::Result<Item> {
        let entry = self.indices[index];
        let s = self.gtsegs.get(entry).map_err(|e| DataError::Decode {
            path: self.path(index),
            reason: e.to_string(),
        })?;
        let image = segtest_transform(&s.image, self.size, &SEG_NORM);
        Ok(item(
            image,
            mask_to_size(&s.mask, self.size),
            self.size,
            self.path(index),
        ))
    }

    fn path(&self, index: usize) -> PathBuf {
        PathBuf::from(format!(
            "{}#{}",
            self.gtsegs.path().display(),
            self.indices[index]
        ))
    }
}

/// An image and the mask of the same stem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegPair {
    pub image: PathBuf,
    pub mask: PathBuf,
}

/// What [`list_seg_folder`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegFolder {
    /// Pairs in sorted path order.
    pub pairs: Vec<SegPair>,
    /// Images without a mask (skipped).
    pub missing_masks: Vec<PathBuf>,
    /// Folders reached again through a symbolic link (a loop, or a second name for a folder
    /// already walked): reported and not followed, so no image is counted twice.
    pub linked_folders: Vec<PathBuf>,
}

/// Lists the images under `dir`, walking each real folder once: a link that leads back to a
/// folder already seen is recorded in `linked` instead of being followed.
fn walk(
    dir: &Path,
    seen: &mut SeenDirs,
    out: &mut Vec<PathBuf>,
    linked: &mut Vec<PathBuf>,
) -> Result<(), DataError> {
    if !seen.first_visit(dir) {
        linked.push(dir.to_owned());
        return Ok(());
    }
    let rd = std::fs::read_dir(dir).map_err(|source| DataError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, seen, out, linked)?;
        } else if has_image_extension(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Pairs every image under `images` (recursively, sorted) with
/// `masks/<same relative folder>/<same stem>.png`.
pub fn list_seg_folder(images: &Path, masks: &Path) -> Result<SegFolder, DataError> {
    for (what, dir) in [("images", images), ("masks", masks)] {
        if !dir.is_dir() {
            return Err(DataError::Layout {
                dataset: "segmentation folder".into(),
                root: dir.to_owned(),
                problem: format!("the {what} folder does not exist"),
                expected: "IMAGES_DIR/<class>/<stem>.<png|jpg> with MASKS_DIR/<class>/<stem>.png \
                           (ImageNet-S encoding: id = R + 256·G)"
                    .into(),
            });
        }
    }
    let mut files = Vec::new();
    let mut out = SegFolder::default();
    walk(
        images,
        &mut SeenDirs::default(),
        &mut files,
        &mut out.linked_folders,
    )?;
    for image in files {
        let rel = image.strip_prefix(images).unwrap_or(&image);
        let mask = masks.join(rel).with_extension("png");
        if mask.is_file() {
            out.pairs.push(SegPair { image, mask });
        } else {
            out.missing_masks.push(image);
        }
    }
    Ok(out)
}

/// A listed segmentation folder as a loader source.
pub struct SegFolderSource {
    pub pairs: Vec<SegPair>,
    pub size: u32,
}

impl SampleSource for SegFolderSource {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn load(&self, index: usize) -> crate::Result<Item> {
        let p = &self.pairs[index];
        let (img, m) = crate::imagenet_s::decode_pair(&p.image, &p.mask)?;
        let image = segtest_transform(&img, self.size, &SEG_NORM);
        Ok(item(
            image,
            m.resize_nearest_pil(self.size, self.size),
            self.size,
            p.image.clone(),
        ))
    }

    fn path(&self, index: usize) -> PathBuf {
        self.pairs[index].image.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_mask_resize_keeps_values_and_same_size_is_identity() {
        let m = GrayImage::from_fn(4, 2, |x, _| image::Luma([u8::from(x >= 2)]));
        assert_eq!(
            mask_to_size(&m, 2).data,
            vec![0.0, 1.0, 0.0, 1.0],
            "PIL source index floor((d + 0.5)·4/2) = 1, 3 for x; the identity for y"
        );
        let m = GrayImage::from_fn(3, 3, |x, y| image::Luma([u8::from(x == y)]));
        assert_eq!(
            mask_to_size(&m, 3).data,
            vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        );
    }

    #[test]
    fn seg_folder_pairs_by_relative_stem() {
        let d = tempfile::tempdir().unwrap();
        let (imgs, masks) = (d.path().join("set"), d.path().join("set-masks"));
        for p in ["n1/a.png", "n1/b.jpg", "n2/c.png"] {
            let f = imgs.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, b"x").unwrap();
        }
        std::fs::write(imgs.join("n1/notes.txt"), b"x").unwrap();
        for p in ["n1/a.png", "n1/b.png"] {
            let f = masks.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, b"x").unwrap();
        }
        let l = list_seg_folder(&imgs, &masks).unwrap();
        assert_eq!(
            l.pairs,
            vec![
                SegPair {
                    image: imgs.join("n1/a.png"),
                    mask: masks.join("n1/a.png")
                },
                SegPair {
                    image: imgs.join("n1/b.jpg"),
                    mask: masks.join("n1/b.png")
                },
            ]
        );
        assert_eq!(l.missing_masks, vec![imgs.join("n2/c.png")]);
        let e = list_seg_folder(&imgs, &d.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    /// A link back to the root (a loop) and a second name for a class folder are reported and
    /// not followed: every image is listed once.
    #[cfg(unix)]
    #[test]
    fn seg_folder_walks_each_real_folder_once() {
        let d = tempfile::tempdir().unwrap();
        let (imgs, masks) = (d.path().join("set"), d.path().join("set-masks"));
        for (dir, p) in [(&imgs, "n1/a.png"), (&masks, "n1/a.png")] {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, b"x").unwrap();
        }
        std::os::unix::fs::symlink(&imgs, imgs.join("n1/loop")).unwrap();
        std::os::unix::fs::symlink(imgs.join("n1"), imgs.join("n9")).unwrap();
        let l = list_seg_folder(&imgs, &masks).unwrap();
        assert_eq!(
            l.pairs,
            vec![SegPair {
                image: imgs.join("n1/a.png"),
                mask: masks.join("n1/a.png")
            }]
        );
        assert_eq!(
            l.linked_folders,
            vec![imgs.join("n1/loop"), imgs.join("n9")]
        );
        assert!(l.missing_masks.is_empty());
    }
}
