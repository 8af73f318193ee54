//! The dataset on disk in the layouts of the real datasets, with a manifest that lets a run
//! reuse a verified layout and regenerate a changed one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::random::{fnv1a, FNV_OFFSET};
use super::split::generate_split;
use super::{
    imagenet_s_id, io_err, Result, Sample, Split, SynthConfig, SynthError, IMAGENET_WNIDS,
    MAX_CLASSES,
};

/// Layout format version, stored in the manifest; bump it when file names or encodings change.
const FORMAT: u32 = 1;
pub(super) const MANIFEST: &str = "manifest.json";

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

#[cfg(test)]
mod tests {
    use super::super::generate;
    use super::super::test_configs::tiny;
    use super::*;

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
}
