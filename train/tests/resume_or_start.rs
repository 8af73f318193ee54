//! `train --resume-or-start`, the behaviour of a job that may be killed and started again: it
//! starts a run, continues a stopped one (also one whose last checkpoint was cut while being
//! saved), leaves a finished one alone, and refuses a folder holding another configuration;
//! every way ends with the weights of an uninterrupted run.

use candle_core::Device;
use clap::Parser;
use std::path::Path;
use train::run_dir::{start_or_resume, StartOrResume};
use train::TrainArgs;

fn args(dir: &Path, out: &Path, extra: &[&str]) -> TrainArgs {
    let d = |p: &str| dir.join(p).to_str().unwrap().to_string();
    let mut a: Vec<String> = [
        "train",
        "--resume-or-start",
        "--arch",
        &d("arch.json"),
        "--imagenet",
        &d("images"),
        "--imagenet-s",
        &d("masks"),
        "--train-classes",
        "2",
        "--train-per-class",
        "2",
        "--val-per-class",
        "1",
        "--epochs",
        "3",
        "--batch-size",
        "2",
        "--lr",
        "2e-3",
        "--device",
        "cpu",
        "--quiet",
        "--vis-images",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    TrainArgs::parse_from(a)
}

fn weights(path: &Path) -> Vec<(String, Vec<u32>)> {
    let t = model::weights::read_safetensors(path, &Device::Cpu).unwrap();
    t.into_iter()
        .map(|(k, v)| {
            let v = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (k, v.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}

fn decision(dir: &Path, run: &Path) -> StartOrResume {
    start_or_resume(run, &args(dir, run, &[]).resolve().unwrap()).unwrap()
}

#[test]
fn starts_resumes_keeps_and_refuses() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let spec = data::synthetic::SyntheticSpec {
        classes: 3,
        images_per_class: 3,
        width: 40,
        height: 36,
        bad_files: false,
    };
    let s = data::synthetic::write_imagenet_s(dir, &spec).unwrap();
    std::fs::rename(&s.images, dir.join("images")).unwrap();
    std::fs::rename(&s.masks, dir.join("masks")).unwrap();
    let mut cfg = model::VitConfig::vit(32, 2, 2, 32, 8);
    cfg.num_classes = 1000;
    std::fs::write(dir.join("arch.json"), serde_json::to_string(&cfg).unwrap()).unwrap();

    // Uninterrupted.
    let a = dir.join("a");
    assert_eq!(decision(dir, &a), StartOrResume::Start);
    train::execute(&args(dir, &a, &[])).unwrap();
    assert_eq!(decision(dir, &a), StartOrResume::Finished);
    let finished = std::fs::read(a.join("last.safetensors")).unwrap();
    train::execute(&args(dir, &a, &[])).unwrap();
    assert_eq!(finished, std::fs::read(a.join("last.safetensors")).unwrap());

    // Stopped after epoch 1, then continued.
    let b = dir.join("b");
    train::execute(&args(dir, &b, &["--stop-after-epochs", "1"])).unwrap();
    assert_eq!(decision(dir, &b), StartOrResume::Resume);
    train::execute(&args(dir, &b, &[])).unwrap();
    for f in ["last.safetensors", "best.safetensors"] {
        assert_eq!(weights(&a.join(f)), weights(&b.join(f)), "{f}");
    }

    // Killed while saving epoch 2's checkpoint, before state.json committed it: the next
    // files are dropped and epoch 2 runs again.
    let c = dir.join("c");
    let copy = |from: &Path, to: &Path, names: [&str; 2]| {
        for (f, t) in ["last.safetensors", "optimizer.safetensors"]
            .iter()
            .zip(names)
        {
            std::fs::copy(from.join(f), to.join(t)).unwrap();
        }
    };
    let b2 = dir.join("b2");
    train::execute(&args(dir, &b2, &["--stop-after-epochs", "2"])).unwrap();
    train::execute(&args(dir, &c, &["--stop-after-epochs", "1"])).unwrap();
    let next = ["last.next.safetensors", "optimizer.next.safetensors"];
    copy(&b2, &c, next);
    assert_eq!(decision(dir, &c), StartOrResume::Resume);
    assert!(!c.join(next[0]).exists() && !c.join(next[1]).exists());
    train::execute(&args(dir, &c, &[])).unwrap();
    assert_eq!(
        weights(&a.join("last.safetensors")),
        weights(&c.join("last.safetensors"))
    );

    // Killed after state.json committed epoch 2 but before the renames: they are completed.
    let c2 = dir.join("c2");
    train::execute(&args(dir, &c2, &["--stop-after-epochs", "1"])).unwrap();
    copy(&b2, &c2, next);
    std::fs::copy(b2.join("state.json"), c2.join("state.json")).unwrap();
    assert_eq!(decision(dir, &c2), StartOrResume::Resume);
    assert_eq!(
        weights(&b2.join("last.safetensors")),
        weights(&c2.join("last.safetensors"))
    );
    train::execute(&args(dir, &c2, &[])).unwrap();
    assert_eq!(
        weights(&a.join("last.safetensors")),
        weights(&c2.join("last.safetensors"))
    );

    // Weights that belong to no saved state (ahead of state.json): started over.
    let c3 = dir.join("c3");
    train::execute(&args(dir, &c3, &["--stop-after-epochs", "1"])).unwrap();
    copy(&b2, &c3, ["last.safetensors", "optimizer.safetensors"]);
    assert_eq!(decision(dir, &c3), StartOrResume::Restart);
    train::execute(&args(dir, &c3, &[])).unwrap();
    assert_eq!(
        weights(&a.join("last.safetensors")),
        weights(&c3.join("last.safetensors"))
    );

    // Finished, but its weights are gone: trained again.
    std::fs::remove_file(c.join("best.safetensors")).unwrap();
    assert_eq!(decision(dir, &c), StartOrResume::Restart);
    train::execute(&args(dir, &c, &[])).unwrap();
    assert_eq!(
        weights(&a.join("best.safetensors")),
        weights(&c.join("best.safetensors"))
    );

    // Another configuration in the folder is never overwritten.
    let mut other = args(dir, &a, &[]);
    other.lr = Some(1e-3);
    let e = train::execute(&other).unwrap_err().to_string();
    assert!(
        e.contains("another configuration") && e.contains("lr"),
        "{e}"
    );
    assert_eq!(finished, std::fs::read(a.join("last.safetensors")).unwrap());
}
