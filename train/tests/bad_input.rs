//! Inputs that used to panic, or to change a run's result without a word: each must now be a
//! clear error (or be repaired), and a refused command must leave nothing behind.

use clap::Parser;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use train::TrainArgs;

mod common;
use common::{fixture, Fixture};

fn args_with(f: &Fixture, images: &Path, masks: &Path, out: &Path, extra: &[&str]) -> TrainArgs {
    let mut a: Vec<String> = [
        "train",
        "--arch",
        f.arch.to_str().unwrap(),
        "--imagenet",
        images.to_str().unwrap(),
        "--imagenet-s",
        masks.to_str().unwrap(),
        "--train-classes",
        "3",
        "--train-per-class",
        "3",
        "--val-per-class",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--val-batch-size",
        "3",
        "--lr",
        "1e-3",
        "--device",
        "cpu",
        "--quiet",
        "--log-every",
        "1",
        "--vis-images",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    TrainArgs::parse_from(a)
}

fn args(f: &Fixture, out: &Path, extra: &[&str]) -> TrainArgs {
    args_with(f, &f.images, &f.masks, out, extra)
}

/// Runs `train` and turns a panic into a test failure that says so.
fn execute(a: &TrainArgs) -> anyhow::Result<PathBuf> {
    match catch_unwind(AssertUnwindSafe(|| train::execute(a))) {
        Ok(r) => r,
        Err(_) => panic!("train panicked instead of returning an error"),
    }
}

fn split_with_masks(f: &Fixture, masks: &[&str]) -> PathBuf {
    let run = f.root.join("template");
    if !run.join("split.json").exists() {
        execute(&args(f, &run, &["--max-steps", "1"])).unwrap();
    }
    let mut split = data::imagenet_s::ImageNetSSplit::load(&run.join("split.json")).unwrap();
    for (s, m) in split.train.iter_mut().zip(masks) {
        s.mask = m.to_string();
    }
    let p = f.root.join(format!("split-{}.json", masks.len()));
    std::fs::write(&p, serde_json::to_string(&split).unwrap()).unwrap();
    p
}

#[test]
fn a_split_mask_path_without_a_file_name_is_an_error() {
    let f = fixture();
    let wnid = data::imagenet_s::ImageNetSSplit::load(&{
        execute(&args(&f, &f.root.join("template"), &["--max-steps", "1"])).unwrap();
        f.root.join("template/split.json")
    })
    .unwrap()
    .train[0]
        .wnid
        .clone();
    for bad in [String::new(), format!("{wnid}/..")] {
        let split = split_with_masks(&f, &[bad.as_str()]);
        let out = f.root.join(format!("run-{}", bad.len()));
        let e = execute(&args(&f, &out, &["--split-file", split.to_str().unwrap()])).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(split.to_str().unwrap()), "{msg}");
        assert!(
            !out.join("config.json").exists(),
            "a refused run left {}",
            out.display()
        );
    }
}

#[test]
fn a_split_without_training_entries_is_an_error() {
    let f = fixture();
    let run = f.root.join("template");
    execute(&args(&f, &run, &["--max-steps", "1"])).unwrap();
    let mut split = data::imagenet_s::ImageNetSSplit::load(&run.join("split.json")).unwrap();
    split.train.clear();
    let p = f.root.join("empty-split.json");
    std::fs::write(&p, serde_json::to_string(&split).unwrap()).unwrap();
    let out = f.root.join("empty");
    let e = execute(&args(&f, &out, &["--split-file", p.to_str().unwrap()])).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("no training"), "{msg}");
    assert!(!out.join("best.safetensors").exists());
    assert!(!out.join("config.json").exists());
}

#[test]
fn force_rebuilds_the_split_for_new_options() {
    let f = fixture();
    let run = f.root.join("run");
    execute(&args(&f, &run, &["--max-steps", "1"])).unwrap();
    let first = data::imagenet_s::ImageNetSSplit::load(&run.join("split.json")).unwrap();
    assert_eq!(first.train.len(), 9);
    std::fs::write(run.join("strips").join("stale.png"), b"old").unwrap();
    let mut again = args(&f, &run, &["--max-steps", "1", "--force"]);
    again.train_per_class = Some(1);
    execute(&again).unwrap();
    let second = data::imagenet_s::ImageNetSSplit::load(&run.join("split.json")).unwrap();
    assert_eq!(second.options.train_per_class, 1);
    assert_eq!(second.train.len(), 3);
    assert!(!run.join("strips").join("stale.png").exists());
}

#[test]
fn swapped_data_folders_leave_no_run_behind() {
    let f = fixture();
    let out = f.root.join("swapped");
    let e = execute(&args_with(
        &f,
        &f.masks,
        &f.images,
        &out,
        &["--max-steps", "1"],
    ))
    .unwrap_err();
    assert!(!out.join("config.json").exists(), "{e:#}");
    // The corrected command is not refused as "already holds a run".
    execute(&args(&f, &out, &["--max-steps", "1"])).unwrap();
}

#[test]
fn a_cut_last_metrics_row_does_not_block_resume() {
    let f = fixture();
    let run = f.root.join("cut");
    execute(&args(&f, &run, &["--stop-after-epochs", "1"])).unwrap();
    let metrics = run.join("metrics.csv");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let rows_before = train::run_dir::read_metrics(&metrics).unwrap().len();
    assert!(rows_before >= 2);
    // A crash while the last row was being written: half a line, no newline.
    let cut = &text[..text.len() - 1 - text.trim_end().rsplit('\n').next().unwrap().len() / 2];
    std::fs::write(&metrics, cut).unwrap();
    let mut resume = args(&f, &run, &[]);
    resume.resume = Some(run.clone());
    execute(&resume).unwrap();
    let rows = train::run_dir::read_metrics(&metrics).unwrap();
    assert!(
        rows.iter().any(|r| r.kind == "epoch" && r.epoch == 1),
        "{rows:?}"
    );
}

#[test]
fn non_positive_std_and_malformed_mean_are_refused() {
    let f = fixture();
    for (flag, v) in [
        ("--std", "0,0,0"),
        ("--std", "0.5,-0.5,0.5"),
        ("--std", "0.5,NaN,0.5"),
        ("--mean", "0.5,inf,0.5"),
        ("--mean", "0.5,0.5"),
    ] {
        let out = f.root.join("norm");
        let e = execute(&args(&f, &out, &[flag, v])).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(flag), "{flag} {v}: {msg}");
        assert!(!out.exists());
    }
}
