//! What the paper tests share: the synthetic inputs, the job-line parser and the comparisons of
//! two output folders.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::Device;
use clap::Parser;
use data::segmentation::mat::{write_gtsegs, Sample};
use experiments::reproduction::PaperArgs;

/// The two paper models whose names label the stand-in model.
pub const MODELS: [&str; 2] = ["augreg-base", "deit-small"];

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    Paper(PaperArgs),
}

pub fn parse_paper(args: &[String]) -> PaperArgs {
    let cli = Cli::try_parse_from(std::iter::once("experiments".to_string()).chain(args.to_vec()))
        .unwrap_or_else(|e| panic!("{e}: {args:?}"));
    let Cmd::Paper(a) = cli.cmd;
    a
}

pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Every dataset and ImageNet-S in their layouts under `root`, the segmentation test's
/// gtsegs file, and the stand-in model; returns (weights, arch).
pub fn fixture(dir: &Path, root: &Path) -> (PathBuf, PathBuf) {
    let spec = data::synthetic::SyntheticSpec {
        classes: 3,
        images_per_class: 3,
        width: 40,
        height: 36,
        bad_files: false,
    };
    data::synthetic::write_all(root, &spec).unwrap();
    let half = Sample {
        image: data::synthetic::pattern(24, 20, 0, 0),
        mask: image::GrayImage::from_fn(24, 20, |x, _| image::Luma([u8::from(x < 12)])),
    };
    let corner = Sample {
        image: data::synthetic::pattern(20, 20, 1, 1),
        mask: image::GrayImage::from_fn(20, 20, |x, y| image::Luma([u8::from(x < 8 && y < 8)])),
    };
    let mat = root.join("imagenet-segmentation/gtsegs_ijcv.mat");
    std::fs::create_dir_all(mat.parent().unwrap()).unwrap();
    write_gtsegs(&mat, &[half, corner]).unwrap();

    let mut cfg = model::VitConfig::vit(32, 2, 2, 32, 8);
    cfg.num_classes = 1000;
    let arch = dir.join("arch.json");
    std::fs::write(&arch, serde_json::to_string(&cfg).unwrap()).unwrap();
    let weights = dir.join("tiny.safetensors");
    let vit = model::Vit::random(&cfg, 7, &Device::Cpu).unwrap();
    model::save_model(&vit, &weights, &Default::default()).unwrap();
    (weights, arch)
}

/// `experiments paper` arguments of the synthetic reproduction, plus `extra`.
pub fn paper_args(
    root: &Path,
    out: &Path,
    weights: &Path,
    arch: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut a: Vec<String> = [
        "paper",
        "--data-root",
        &s(root),
        "--models",
        &MODELS.join(","),
        "--out",
        &s(out),
        "--device",
        "cpu",
        "--limit-classes",
        "2",
        "--limit",
        "2",
        "--quiet",
        "--arch",
        &s(arch),
        "--weights",
        &s(weights),
    ]
    .map(String::from)
    .to_vec();
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// POSIX-shell word splitting of the printed lines (plain words and single quotes).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// A result table without the columns that record when and how fast it ran, and without the
/// checkpoint hash: the model crate writes safetensors header metadata in `HashMap` order, so
/// equal weights can hash differently (the weights themselves are compared separately).
pub fn without_run_columns(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| !["date", "images_per_s", "checkpoint_sha256"].contains(&header[i]))
        .collect();
    std::iter::once(header.join(","))
        .chain(lines.map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            keep.iter().map(|&i| f[i]).collect::<Vec<_>>().join(",")
        }))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every tensor of a run's weights file, as f32 values.
pub fn weights_of(path: &Path) -> Vec<(String, Vec<f32>)> {
    let t = model::weights::read_safetensors(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    t.into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// Asserts that two reproductions (output folders `a` and `b`) hold bit-identical finetuned
/// weights and the same tables and charts, apart from when and how fast they ran.
pub fn assert_same_outputs(a: &Path, b: &Path) {
    for m in MODELS {
        for f in ["best.safetensors", "last.safetensors"] {
            let p = |d: &Path| d.join("runs").join(m).join(f);
            let (wa, wb) = (weights_of(&p(a)), weights_of(&p(b)));
            assert_eq!(
                wa.iter().map(|x| &x.0).collect::<Vec<_>>(),
                wb.iter().map(|x| &x.0).collect::<Vec<_>>()
            );
            for ((k, va), (_, vb)) in wa.iter().zip(&wb) {
                let same = va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same && va.len() == vb.len(), "{m} {f}: {k} differs");
            }
        }
    }
    for f in ["robustness.csv", "segmentation.csv"] {
        let (ta, tb) = (
            without_run_columns(&a.join(f)),
            without_run_columns(&b.join(f)),
        );
        assert_eq!(ta, tb, "{f}");
        assert!(ta.lines().count() > 1, "{f} is empty");
    }
    for f in ["paper_table.md", "paper_table.csv"] {
        let (ta, tb) = (
            std::fs::read_to_string(a.join(f)).unwrap(),
            std::fs::read_to_string(b.join(f)).unwrap(),
        );
        assert_eq!(ta, tb, "{f}");
    }
    let charts = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("chart_"))
            .collect()
    };
    assert!(!charts(b).is_empty());
    assert_eq!(charts(a), charts(b));
    for c in charts(b) {
        let same = std::fs::read(a.join(&c)).unwrap() == std::fs::read(b.join(&c)).unwrap();
        assert!(same, "{c} differs");
    }
}
