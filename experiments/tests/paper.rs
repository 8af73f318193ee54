//! `experiments paper` on the data crate's synthetic layouts of every dataset, with a tiny random
//! model standing in for the hub models: `--print-jobs` lists every (model, step) cell, and those
//! commands run in a shuffled order give the same tables as the in-process run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use clap::Parser;
use evaluate::mat::{write_gtsegs, Sample};
use experiments::paper::{self, PaperArgs};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The two paper models whose names label the stand-in model.
const MODELS: [&str; 2] = ["augreg-base", "deit-small"];

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    Paper(PaperArgs),
}

fn parse_paper(args: &[String]) -> PaperArgs {
    let cli = Cli::try_parse_from(std::iter::once("experiments".to_string()).chain(args.to_vec()))
        .unwrap_or_else(|e| panic!("{e}: {args:?}"));
    let Cmd::Paper(a) = cli.cmd;
    a
}

/// Every dataset and ImageNet-S in their layouts under `root`, the segmentation test's
/// gtsegs file, and the stand-in model; returns (weights, arch).
fn fixture(dir: &Path, root: &Path) -> (PathBuf, PathBuf) {
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

/// POSIX-shell word splitting of the printed lines (plain words and single quotes).
fn split_words(line: &str) -> Vec<String> {
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

/// (package, arguments after `--`) of a printed job.
fn parse_job(line: &str) -> (String, Vec<String>) {
    let w = split_words(line);
    assert_eq!(
        w[..3],
        ["cargo", "run", "--release"],
        "not a cargo run line: {line}"
    );
    assert_eq!((w[3].as_str(), w[5].as_str()), ("-p", "--"), "{line}");
    (w[4].clone(), w[6..].to_vec())
}

/// Runs a printed job in-process, as its binary would.
fn execute(line: &str) {
    let (package, args) = parse_job(line);
    match package.as_str() {
        "train" => {
            let a =
                train::TrainArgs::try_parse_from(std::iter::once("train".to_string()).chain(args))
                    .unwrap();
            train::execute(&a).unwrap();
        }
        "evaluate" => {
            let a = evaluate::EvalArgs::try_parse_from(
                std::iter::once("evaluate".to_string()).chain(args),
            )
            .unwrap();
            evaluate::run(&a).unwrap();
        }
        "experiments" => paper::run(&parse_paper(&args)).unwrap(),
        p => panic!("unexpected package {p}: {line}"),
    }
}

/// The value after `flag` in a job's arguments.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .map(|i| args[i + 1].as_str())
}

/// A result table without the columns that record when and how fast it ran, and without the
/// checkpoint hash: the model crate writes safetensors header metadata in `HashMap` order, so
/// equal weights can hash differently (the weights themselves are compared separately).
fn without_run_columns(path: &Path) -> String {
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

#[test]
fn printed_jobs_in_any_order_give_the_same_tables() {
    for m in MODELS {
        assert!(model::VARIANTS.iter().any(|v| v.name == m), "{m}");
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    let out = d.path().join("out");
    let (weights, arch) = fixture(d.path(), &root);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args: Vec<String> = [
        "paper",
        "--data-root",
        &s(&root),
        "--models",
        &MODELS.join(","),
        "--out",
        &s(&out),
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--limit-classes",
        "2",
        "--limit",
        "2",
        "--quiet",
        "--arch",
        &s(&arch),
        "--weights",
        &s(&weights),
    ]
    .map(String::from)
    .to_vec();

    // (a) The job list, from the binary itself.
    let print = |args: &[String]| -> Vec<String> {
        let o = Command::new(env!("CARGO_BIN_EXE_experiments"))
            .args(args)
            .arg("--print-jobs")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let lines = print(&args);
    let cells: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            let (package, a) = parse_job(l);
            let what = match package.as_str() {
                "train" => {
                    assert_eq!(
                        flag(&a, "--imagenet"),
                        Some(s(&root.join("ImageNetS919/train-semi")).as_str())
                    );
                    assert_eq!(flag(&a, "--max-steps"), Some("2"));
                    s(Path::new(flag(&a, "--out").unwrap()))
                }
                "evaluate" => {
                    assert_eq!(flag(&a, "--suite"), Some("all"));
                    assert_eq!(flag(&a, "--limit"), Some("2"));
                    flag(&a, "--checkpoint").unwrap().to_string()
                }
                _ => a[..2].join(" "),
            };
            let model = flag(&a, "--model").or(flag(&a, "--models")).unwrap();
            (package, model.to_string(), what)
        })
        .collect();
    let run = |m: &str| s(&out.join("runs").join(m));
    let best = |m: &str| s(&out.join("runs").join(m).join("best.safetensors"));
    let t = |p: &str, m: &str, w: String| (p.to_string(), m.to_string(), w);
    let expected = vec![
        t("train", MODELS[0], run(MODELS[0])),
        t("train", MODELS[1], run(MODELS[1])),
        t("evaluate", MODELS[0], s(&weights)),
        t("evaluate", MODELS[1], s(&weights)),
        t("evaluate", MODELS[0], best(MODELS[0])),
        t("evaluate", MODELS[1], best(MODELS[1])),
        t("experiments", &MODELS.join(","), "paper --merge".into()),
    ];
    assert_eq!(cells, expected, "{lines:#?}");

    // (b) The whole reproduction in-process, then moved aside so that (c) writes the same paths.
    paper::run(&parse_paper(&args)).unwrap();
    let a_dir = d.path().join("a");
    std::fs::rename(&out, &a_dir).unwrap();

    // (c) The printed jobs in a shuffled order: trainings, evaluations, then the merge.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut trains: Vec<&String> = lines.iter().filter(|l| l.contains(" -p train ")).collect();
    let mut evals: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" -p evaluate "))
        .collect();
    trains.shuffle(&mut rng);
    evals.shuffle(&mut rng);
    assert_eq!(trains.len() + evals.len() + 1, lines.len());
    for l in trains.into_iter().chain(evals) {
        execute(l);
    }
    execute(lines.last().unwrap());

    // (d) The same weights and the same tables.
    for m in MODELS {
        let read = |dir: &Path| {
            model::weights::read_safetensors(
                &dir.join("runs").join(m).join("best.safetensors"),
                &Device::Cpu,
            )
            .unwrap()
        };
        let (a, b) = (read(&a_dir), read(&out));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, ta) in &a {
            let (va, vb) = (
                ta.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b[k].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert!(va == vb, "{m}: {k} differs");
        }
    }
    for f in ["robustness.csv", "segmentation.csv"] {
        let (a, b) = (
            without_run_columns(&a_dir.join(f)),
            without_run_columns(&out.join(f)),
        );
        assert_eq!(a, b, "{f}");
        let rows = a.lines().count() - 1;
        assert!(rows > 0, "{f} is empty");
    }
    let rob = without_run_columns(&out.join("robustness.csv"));
    for m in MODELS {
        for c in [s(&weights), best(m)] {
            assert!(
                rob.lines().any(|l| l.starts_with(&format!("{m},{c},"))),
                "no rows of {m} {c} in\n{rob}"
            );
        }
    }
    for f in ["paper_table.md", "paper_table.csv"] {
        let (a, b) = (
            std::fs::read_to_string(a_dir.join(f)).unwrap(),
            std::fs::read_to_string(out.join(f)).unwrap(),
        );
        assert_eq!(a, b, "{f}");
    }
    let charts = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("chart_"))
            .collect()
    };
    assert!(!charts(&out).is_empty());
    assert_eq!(charts(&a_dir), charts(&out));
    for c in charts(&out) {
        let same = std::fs::read(a_dir.join(&c)).unwrap() == std::fs::read(out.join(&c)).unwrap();
        assert!(same, "{c} differs");
    }

    // Once everything is done the job list resumes (and so keeps) the finished runs, and the
    // merge can be run again without changing the tables.
    let again = print(&args);
    assert_eq!(again.len(), lines.len());
    assert_eq!(
        flag(&parse_job(&again[0]).1, "--resume"),
        Some(run(MODELS[0]).as_str())
    );
    execute(&again[0]);
    execute(again.last().unwrap());
    assert_eq!(
        std::fs::read_to_string(a_dir.join("paper_table.md")).unwrap(),
        std::fs::read_to_string(out.join("paper_table.md")).unwrap()
    );
}

#[test]
fn missing_training_data_says_where_it_was_looked_for() {
    let d = tempfile::tempdir().unwrap();
    let a = parse_paper(
        &[
            "paper",
            "--data-root",
            d.path().to_str().unwrap(),
            "--out",
            d.path().join("out").to_str().unwrap(),
        ]
        .map(String::from),
    );
    let e = format!("{:#}", paper::run(&a).unwrap_err());
    assert!(
        e.contains("imagenet/train") && e.contains("--imagenet"),
        "{e}"
    );
    // The merge of evaluations that never ran names them.
    let m = parse_paper(
        &[
            "paper",
            "--merge",
            "--models",
            "vit-b",
            "--out",
            d.path().join("out").to_str().unwrap(),
        ]
        .map(String::from),
    );
    let e = format!("{:#}", paper::run(&m).unwrap_err());
    assert!(
        e.contains("vit-base-original") && e.contains("--print-jobs"),
        "{e}"
    );
}
