//! What an invocation asks for: which datasets (found where, or skipped why) and how each
//! protocol preprocesses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use data::preprocess::{EvalTransform, Interpolation, Normalization};
use data::segmentation::mat::GtSegs;
use data::segmentation::{list_seg_folder, SegPair};
use data::{Benchmark, EvalDataset, EvalSample, Protocol};
use model::PretrainedCfg;

use crate::cli::EvalArgs;
use crate::comparison::IMAGENET_SEG;

/// Conventional location of `gtsegs_ijcv.mat` under the data root; the file directly at the
/// root is accepted too.
pub const GTSEGS_DIR: &str = "imagenet-segmentation";
pub const GTSEGS_FILE: &str = "gtsegs_ijcv.mat";

/// A dataset that was not found and not asked for by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub dataset: String,
    pub reason: String,
}

/// A classification set: one of the benchmarks or a `--folder`.
#[derive(Debug, Clone)]
pub struct ClassificationSet {
    pub name: String,
    /// None for a `--folder` (ImageNet-val layout, resized to the model's input size).
    pub benchmark: Option<Benchmark>,
    pub root: PathBuf,
    pub samples: Vec<EvalSample>,
    /// Files the reader ignored (README, unknown folders, ...), for the report.
    pub problems: usize,
}

/// A segmentation set.
pub enum SegSet {
    GtSegs {
        gtsegs: Arc<GtSegs>,
        indices: Vec<usize>,
    },
    Folder {
        name: String,
        pairs: Vec<SegPair>,
        missing_masks: Vec<PathBuf>,
    },
}

impl SegSet {
    pub fn name(&self) -> &str {
        match self {
            SegSet::GtSegs { .. } => IMAGENET_SEG,
            SegSet::Folder { name, .. } => name,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            SegSet::GtSegs { indices, .. } => indices.len(),
            SegSet::Folder { pairs, .. } => pairs.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn location(&self) -> String {
        match self {
            SegSet::GtSegs { gtsegs, .. } => gtsegs.path().display().to_string(),
            SegSet::Folder { pairs, .. } => pairs
                .first()
                .and_then(|p| p.image.parent()?.parent())
                .map_or_else(String::new, |p| p.display().to_string()),
        }
    }
}

/// The datasets of an invocation.
#[derive(Default)]
pub struct Datasets {
    pub classification: Vec<ClassificationSet>,
    pub segmentation: Vec<SegSet>,
    pub skipped: Vec<Skipped>,
    /// Everything wrong with what was asked for; nothing runs unless this is empty.
    pub problems: Vec<String>,
}

/// Every name `--suite` accepts besides the dataset names.
pub const SUITE_GROUPS: [&str; 4] = ["all", "robustness", "segmentation", "si-score"];

/// Requested conventional datasets: benchmark → named explicitly; segmentation likewise.
#[derive(Debug, Default, PartialEq)]
pub struct Selection {
    pub benchmarks: BTreeMap<Benchmark, bool>,
    pub imagenet_seg: Option<bool>,
}

/// Resolves `--suite`. A dataset named on its own (or through its own path flag) must exist;
/// one that comes with a group (`all`, `robustness`, `segmentation`) is skipped when missing.
pub fn select(args: &EvalArgs) -> Result<Selection, String> {
    let mut sel = Selection::default();
    let default_all =
        args.suite.is_empty() && args.folders.is_empty() && args.seg_folders.is_empty();
    let names: Vec<&str> = if default_all {
        vec!["all"]
    } else {
        args.suite.iter().map(|s| s.trim()).collect()
    };
    let add_b = |sel: &mut Selection, b: Benchmark, named: bool| {
        let e = sel.benchmarks.entry(b).or_insert(false);
        *e |= named;
    };
    for name in names {
        match name {
            "all" | "robustness" => {
                for b in Benchmark::ALL {
                    add_b(&mut sel, b, false);
                }
                if name == "all" {
                    sel.imagenet_seg.get_or_insert(false);
                }
            }
            "segmentation" => {
                sel.imagenet_seg.get_or_insert(false);
            }
            "si-score" => {
                for b in [
                    Benchmark::SiScoreLocation,
                    Benchmark::SiScoreRotation,
                    Benchmark::SiScoreSize,
                ] {
                    add_b(&mut sel, b, true);
                }
            }
            "imagenet-seg" => sel.imagenet_seg = Some(true),
            "" => {}
            other => match Benchmark::from_name(other) {
                Ok(b) => add_b(&mut sel, b, true),
                Err(_)
                    if args.folders.iter().any(|f| f.name == other)
                        || args.seg_folders.iter().any(|f| f.name == other) => {}
                Err(_) => {
                    let mut known: Vec<&str> = SUITE_GROUPS.to_vec();
                    known.extend(Benchmark::ALL.iter().map(|b| b.name()));
                    known.push(IMAGENET_SEG);
                    return Err(format!(
                        "unknown suite or dataset `{other}`; known: {}",
                        known.join(", ")
                    ));
                }
            },
        }
    }
    // An explicit path flag makes its dataset "asked for by name".
    for (b, named) in sel.benchmarks.iter_mut() {
        *named |= args.benchmark_path(*b).is_some();
    }
    if let Some(named) = sel.imagenet_seg.as_mut() {
        *named |= args.imagenet_seg.is_some();
    }
    Ok(sel)
}

/// Evenly spread subset of at most `limit` indices out of `n` (all when `limit` is None), so
/// that a quick trial sees every part of a class-sorted list.
pub fn spread_indices(n: usize, limit: Option<usize>) -> Vec<usize> {
    match limit {
        Some(l) if l < n => (0..l).map(|i| i * n / l).collect(),
        _ => (0..n).collect(),
    }
}

fn gtsegs_path(args: &EvalArgs) -> PathBuf {
    if let Some(p) = &args.imagenet_seg {
        return p.clone();
    }
    let conventional = args.data_root.join(GTSEGS_DIR).join(GTSEGS_FILE);
    let at_root = args.data_root.join(GTSEGS_FILE);
    if !conventional.exists() && at_root.exists() {
        at_root
    } else {
        conventional
    }
}

fn flag_of(b: Benchmark) -> String {
    format!("--{}", b.name())
}

/// Finds and lists every requested dataset (no image is decoded).
pub fn resolve(args: &EvalArgs) -> Datasets {
    let mut out = Datasets::default();
    let sel = match select(args) {
        Ok(s) => s,
        Err(e) => {
            out.problems.push(e);
            return out;
        }
    };
    for (&b, &named) in &sel.benchmarks {
        let root = args
            .benchmark_path(b)
            .cloned()
            .unwrap_or_else(|| args.data_root.join(b.default_dir()));
        if !root.exists() {
            let why = format!(
                "{} not found at {} (put it there, or pass {} PATH)",
                b.display_name(),
                root.display(),
                flag_of(b)
            );
            if named {
                out.problems.push(why);
            } else {
                out.skipped.push(Skipped {
                    dataset: b.name().into(),
                    reason: why,
                });
            }
            continue;
        }
        match EvalDataset::open(b, &root) {
            Ok(ds) => {
                let idx = spread_indices(ds.samples.len(), args.limit);
                out.classification.push(ClassificationSet {
                    name: b.name().into(),
                    benchmark: Some(b),
                    root: ds.root.clone(),
                    samples: idx.iter().map(|&i| ds.samples[i].clone()).collect(),
                    problems: ds.report.num_problems(),
                });
            }
            Err(e) => out.problems.push(e.to_string()),
        }
    }
    for f in &args.folders {
        if out.classification.iter().any(|c| c.name == f.name) {
            out.problems.push(format!(
                "--folder {}: the name is already used by another dataset",
                f
            ));
            continue;
        }
        match EvalDataset::open(Benchmark::ImageNetVal, &f.path) {
            Ok(ds) => {
                let idx = spread_indices(ds.samples.len(), args.limit);
                out.classification.push(ClassificationSet {
                    name: f.name.clone(),
                    benchmark: None,
                    root: ds.root.clone(),
                    samples: idx.iter().map(|&i| ds.samples[i].clone()).collect(),
                    problems: ds.report.num_problems(),
                });
            }
            Err(e) => out.problems.push(format!("--folder {f}: {e}")),
        }
    }
    if let Some(named) = sel.imagenet_seg {
        let path = gtsegs_path(args);
        if !path.exists() && !named {
            out.skipped.push(Skipped {
                dataset: IMAGENET_SEG.into(),
                reason: format!(
                    "ImageNet-Segmentation not found at {} (download {} there, or pass --imagenet-seg FILE)",
                    path.display(),
                    data::segmentation::mat::GTSEGS_URL
                ),
            });
        } else {
            match GtSegs::open(&path) {
                Ok(g) => {
                    let indices = spread_indices(g.len(), args.limit);
                    out.segmentation.push(SegSet::GtSegs {
                        gtsegs: Arc::new(g),
                        indices,
                    });
                }
                Err(e) => out.problems.push(e.to_string()),
            }
        }
    }
    for f in &args.seg_folders {
        match list_seg_folder(&f.images, &f.masks) {
            Ok(l) if l.pairs.is_empty() => out.problems.push(format!(
                "--seg-folder {f}: no image has a mask of the same relative path and stem ({} images without one)",
                l.missing_masks.len()
            )),
            Ok(l) => {
                for dir in &l.linked_folders {
                    report::note(format!(
                        "warning: --seg-folder {f}: {} is a folder already walked (a symbolic link \
                         loop or a second name); skipped so that no image counts twice",
                        dir.display()
                    ));
                }
                let idx = spread_indices(l.pairs.len(), args.limit);
                out.segmentation.push(SegSet::Folder {
                    name: f.name.clone(),
                    pairs: idx.iter().map(|&i| l.pairs[i].clone()).collect(),
                    missing_masks: l.missing_masks,
                });
            }
            Err(e) => out.problems.push(format!("--seg-folder {f}: {e}")),
        }
    }
    for s in &out.segmentation {
        let clash = out.classification.iter().any(|c| c.name == s.name())
            || out
                .segmentation
                .iter()
                .filter(|o| o.name() == s.name())
                .count()
                > 1;
        if clash && s.name() != IMAGENET_SEG {
            out.problems.push(format!(
                "--seg-folder {}: the name is already used by another dataset",
                s.name()
            ));
        }
    }
    out
}

/// `floor(img_size · 256 / 224)`: the paper's Resize(256) for CenterCrop(224), scaled to the
/// model's input size.
pub fn paper_resize(img_size: u32) -> u32 {
    img_size * 256 / 224
}

/// The preprocessing of `set` under `protocol` for a model of input size `img_size` whose own
/// preprocessing is `cfg`.
///
/// * Benchmarks, paper: Resize(img_size·256/224) bilinear, CenterCrop(img_size), 0.5/0.5.
/// * Benchmarks, official and testbed: timm's eval transform from the model's config
///   (crop_pct, interpolation, mean/std); under testbed ObjectNet first loses a 2-pixel border
///   on every side (imagenet-testbed crops the decoded image before its transform).
/// * `--folder` sets: resized to the input size (an image already at that size only gets
///   normalised); paper normalisation 0.5/0.5, official the model's own.
pub fn transform(
    benchmark: Option<Benchmark>,
    protocol: Protocol,
    img_size: u32,
    cfg: &PretrainedCfg,
) -> Result<EvalTransform, data::DataError> {
    let own_norm = Normalization {
        mean: cfg.mean,
        std: cfg.std,
    };
    Ok(match (benchmark, protocol) {
        (Some(_), Protocol::Paper) => EvalTransform {
            resize: paper_resize(img_size),
            crop: img_size,
            ..EvalTransform::PAPER
        },
        (Some(b), Protocol::Official | Protocol::Testbed) => EvalTransform::timm(
            img_size,
            cfg.crop_pct,
            Interpolation::from_name(&cfg.interpolation)?,
            own_norm,
        )
        .with_border(b.border(protocol)),
        (None, Protocol::Paper) => EvalTransform {
            resize: img_size,
            crop: img_size,
            ..EvalTransform::PAPER
        },
        (None, Protocol::Official | Protocol::Testbed) => EvalTransform {
            resize: img_size,
            crop: img_size,
            interpolation: Interpolation::from_name(&cfg.interpolation)?,
            norm: own_norm,
            border: 0,
        },
    })
}

/// The protocols scored on `set` out of `requested`: a testbed row that would repeat the
/// official one (every benchmark but ObjectNet, and `--folder` sets) is left out when the
/// official protocol runs too.
pub fn protocols_for(set: &ClassificationSet, requested: &[Protocol]) -> Vec<Protocol> {
    let official = requested.contains(&Protocol::Official);
    requested
        .iter()
        .copied()
        .filter(|&p| {
            !(official
                && p == Protocol::Testbed
                && !set.benchmark.is_some_and(|b| p.differs_from_official(b)))
        })
        .collect()
}

/// Checkpoint folder or file label used as the model column when no `--model` is given.
pub fn label_from_checkpoint(ckpt: &str) -> String {
    let p = Path::new(ckpt);
    let name = |p: &Path| p.file_name().map(|s| s.to_string_lossy().into_owned());
    if p.is_dir() {
        if let Some(n) = name(p) {
            return n;
        }
    } else if p.exists() {
        if let Some(n) = p.parent().and_then(name).filter(|n| !n.is_empty()) {
            return n;
        }
        if let Some(s) = p.file_stem() {
            return s.to_string_lossy().into_owned();
        }
    }
    // A hub id: the repository name.
    let repo = ckpt.split('@').next().unwrap_or(ckpt);
    repo.rsplit('/').next().unwrap_or(repo).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(a: &[&str]) -> EvalArgs {
        EvalArgs::try_parse_from(std::iter::once("evaluate").chain(a.iter().copied())).unwrap()
    }

    #[test]
    fn paper_transform_scales_with_the_input_size() {
        let cfg = PretrainedCfg::imagenet(224);
        let t = transform(Some(Benchmark::ImageNetA), Protocol::Paper, 224, &cfg).unwrap();
        assert_eq!(t, EvalTransform::PAPER);
        let t = transform(Some(Benchmark::ImageNetA), Protocol::Paper, 32, &cfg).unwrap();
        assert_eq!((t.resize, t.crop, t.norm), (36, 32, Normalization::HALF));
        assert_eq!(paper_resize(384), 438);
    }

    #[test]
    fn official_transform_follows_the_model_and_objectnet_border() {
        let deit = PretrainedCfg::imagenet(224);
        let t = transform(Some(Benchmark::ImageNetR), Protocol::Official, 224, &deit).unwrap();
        assert_eq!(
            t,
            EvalTransform {
                resize: 256, // floor(224 / 0.875)
                crop: 224,
                interpolation: Interpolation::Bicubic,
                norm: Normalization::IMAGENET,
                border: 0,
            }
        );
        let vit = PretrainedCfg::inception(224);
        // ObjectNet's own code does not cut the border; imagenet-testbed does, before resizing.
        let t = transform(Some(Benchmark::ObjectNet), Protocol::Official, 224, &vit).unwrap();
        assert_eq!((t.resize, t.border, t.norm), (248, 0, Normalization::HALF));
        let t = transform(Some(Benchmark::ObjectNet), Protocol::Testbed, 224, &vit).unwrap();
        assert_eq!((t.resize, t.border, t.norm), (248, 2, Normalization::HALF));
        let t = transform(Some(Benchmark::ObjectNet), Protocol::Paper, 224, &vit).unwrap();
        assert_eq!(t.border, 0);
        let t = transform(Some(Benchmark::ImageNetR), Protocol::Testbed, 224, &deit).unwrap();
        assert_eq!(t.border, 0);
    }

    fn set(benchmark: Option<Benchmark>) -> ClassificationSet {
        ClassificationSet {
            name: "x".into(),
            benchmark,
            root: PathBuf::new(),
            samples: Vec::new(),
            problems: 0,
        }
    }

    #[test]
    fn testbed_rows_only_where_they_differ_from_official() {
        use Protocol::*;
        let on = set(Some(Benchmark::ObjectNet));
        let a = set(Some(Benchmark::ImageNetA));
        let folder = set(None);
        assert_eq!(
            protocols_for(&on, &Protocol::ALL),
            vec![Paper, Official, Testbed]
        );
        assert_eq!(protocols_for(&a, &Protocol::ALL), vec![Paper, Official]);
        assert_eq!(
            protocols_for(&folder, &Protocol::ALL),
            vec![Paper, Official]
        );
        // Asked for alone, testbed scores every set.
        assert_eq!(protocols_for(&a, &[Testbed]), vec![Testbed]);
        assert_eq!(protocols_for(&folder, &[Testbed]), vec![Testbed]);
    }

    #[test]
    fn folder_transform_is_identity_plus_normalisation_at_the_input_size() {
        let cfg = PretrainedCfg::imagenet(32);
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x * y) % 256) as u8])
        });
        for p in [Protocol::Paper, Protocol::Official] {
            let t = transform(None, p, 32, &cfg).unwrap();
            assert_eq!((t.resize, t.crop, t.border), (32, 32, 0));
            assert_eq!(t.apply_u8(&img), img, "{p:?}");
            assert_eq!(t.apply(&img), data::preprocess::to_chw(&img, &t.norm));
        }
        assert_eq!(
            transform(None, Protocol::Official, 32, &cfg).unwrap().norm,
            Normalization::IMAGENET
        );
        // The segmentation test's resize is the identity at the input size too.
        assert_eq!(
            data::preprocess::segtest_transform(&img, 32, &Normalization::HALF),
            data::preprocess::to_chw(&img, &Normalization::HALF)
        );
    }

    #[test]
    fn suite_selection() {
        let s = select(&args(&[])).unwrap();
        assert_eq!(s.benchmarks.len(), 9);
        assert!(s.benchmarks.values().all(|n| !n));
        assert_eq!(s.imagenet_seg, Some(false));
        let s = select(&args(&["--suite", "robustness,imagenet-a"])).unwrap();
        assert_eq!(s.benchmarks.len(), 9);
        assert!(s.benchmarks[&Benchmark::ImageNetA]);
        assert!(!s.benchmarks[&Benchmark::ImageNetR]);
        assert_eq!(s.imagenet_seg, None);
        let s = select(&args(&[
            "--suite",
            "segmentation",
            "--imagenet-seg",
            "x.mat",
        ]))
        .unwrap();
        assert_eq!((s.benchmarks.len(), s.imagenet_seg), (0, Some(true)));
        let s = select(&args(&["--folder", "b=/x"])).unwrap();
        assert_eq!(s, Selection::default());
        let s = select(&args(&["--suite", "all", "--imagenet-r", "/r"])).unwrap();
        assert!(s.benchmarks[&Benchmark::ImageNetR]);
        let e = select(&args(&["--suite", "imagenet-c"])).unwrap_err();
        assert!(
            e.contains("imagenet-c") && e.contains("si-score-size"),
            "{e}"
        );
    }

    #[test]
    fn missing_datasets_are_skipped_in_groups_and_errors_by_name() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap();
        let r = resolve(&args(&["--data-root", root]));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.skipped.len(), 10);
        assert!(
            r.skipped[0].reason.contains("--imagenet-val PATH"),
            "{:?}",
            r.skipped[0]
        );
        assert!(
            r.skipped[9].reason.contains("gtsegs_ijcv.mat"),
            "{:?}",
            r.skipped[9]
        );
        let r = resolve(&args(&["--data-root", root, "--suite", "all,objectnet"]));
        assert_eq!(r.skipped.len(), 9);
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].contains("objectnet-1.0"), "{:?}", r.problems);
    }

    #[test]
    fn spread_subset() {
        assert_eq!(spread_indices(10, Some(4)), vec![0, 2, 5, 7]);
        assert_eq!(spread_indices(3, Some(4)), vec![0, 1, 2]);
        assert_eq!(spread_indices(3, None), vec![0, 1, 2]);
    }
}
