//! A whole training run on a synthetic ImageNet / ImageNet-S layout with a tiny model:
//! the loss goes down, `best.safetensors` reproduces the logged validation loss, and a run
//! interrupted after epoch 1 and resumed ends with the same weights as an uninterrupted one.

use candle_core::Device;
use clap::Parser;
use std::path::Path;
use train::run_dir::read_metrics;
use train::TrainArgs;

mod common;
use common::{fixture, Fixture};

fn args(f: &Fixture, out: &Path, extra: &[&str]) -> TrainArgs {
    let mut a: Vec<String> = [
        "train",
        "--arch",
        f.arch.to_str().unwrap(),
        "--imagenet",
        f.images.to_str().unwrap(),
        "--imagenet-s",
        f.masks.to_str().unwrap(),
        "--train-classes",
        "3",
        "--train-per-class",
        "3",
        "--val-per-class",
        "2",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--val-batch-size",
        "3",
        "--lr",
        "2e-3",
        "--seed",
        "5",
        "--device",
        "cpu",
        "--quiet",
        "--log-every",
        "1",
        "--vis-images",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    TrainArgs::parse_from(a)
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let t = model::weights::read_safetensors(path, &Device::Cpu).unwrap();
    t.into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn run_trains_saves_best_and_resumes_identically() {
    let f = fixture();
    let run1 = f.root.join("run1");
    train::execute(&args(&f, &run1, &[])).unwrap();
    for file in [
        "config.json",
        "state.json",
        "metrics.csv",
        "split.json",
        "last.safetensors",
        "optimizer.safetensors",
        "best.safetensors",
    ] {
        assert!(run1.join(file).is_file(), "{file} missing");
    }
    assert!(run1.join("strips/epoch_002_img_0.png").is_file());

    // The relevance loss on a fixed training batch went down.
    let cfg = args(&f, &run1, &[]).resolve().unwrap();
    let arch = cfg.arch.clone().unwrap();
    let split = data::imagenet_s::ImageNetSSplit::load(&run1.join("split.json")).unwrap();
    assert_eq!(split.train.len(), 9);
    assert_eq!(split.val.len(), 2);
    let ds = data::imagenet_s::ImageNetS::new(&f.masks, &f.images);
    let batch_ex = data::train_source::seg_examples(&ds, &split.train);
    let batch = train::batches::load_all(&cfg, &batch_ex, 32, &Device::Cpu).unwrap();
    let lc = train::trainer::loss_config(&cfg).unwrap();
    let loss_of = |vit: &model::Vit| {
        relevance::eval_loss(
            vit,
            &batch.images,
            batch.masks.as_ref().unwrap(),
            &batch.labels,
            &lc,
        )
        .unwrap()
        .losses
        .total
    };
    let initial = model::Vit::random(&arch, cfg.seed, &Device::Cpu).unwrap();
    let p = run1.join("last.safetensors");
    let hub = model::HubOptions {
        cache_dir: f.root.clone(),
        offline: true,
        progress: false,
    };
    let trained = model::load(None, Some(p.to_str().unwrap()), &hub, &Device::Cpu)
        .unwrap()
        .vit;
    let (before, after) = (loss_of(&initial), loss_of(&trained));
    assert!(after < before, "loss did not decrease: {before} -> {after}");

    // best.safetensors gives the validation loss logged for its epoch.
    let state: train::run_dir::RunState =
        serde_json::from_str(&std::fs::read_to_string(run1.join("state.json")).unwrap()).unwrap();
    assert!(state.finished);
    let best_epoch = state.best_epoch.unwrap();
    let rows = read_metrics(&run1.join("metrics.csv")).unwrap();
    let logged = rows
        .iter()
        .find(|r| r.kind == "epoch" && r.epoch == best_epoch)
        .unwrap()
        .val_loss
        .unwrap();
    let p = run1.join("best.safetensors");
    let best = model::load(None, Some(p.to_str().unwrap()), &hub, &Device::Cpu)
        .unwrap()
        .vit;
    let val_ex = data::train_source::seg_examples(&ds, &split.val);
    let v = train::trainer::validate(&best, &val_ex, &cfg, &lc, &Device::Cpu).unwrap();
    assert!(
        (v.loss - logged).abs() < 1e-6,
        "best model val loss {} vs logged {logged}",
        v.loss
    );
    assert_eq!(state.best_val_loss, Some(logged));

    // Interrupted after epoch 1, then resumed: the same weights and optimizer state.
    let run2 = f.root.join("run2");
    train::execute(&args(&f, &run2, &["--stop-after-epochs", "1"])).unwrap();
    let st: train::run_dir::RunState =
        serde_json::from_str(&std::fs::read_to_string(run2.join("state.json")).unwrap()).unwrap();
    assert_eq!((st.epochs_done, st.finished), (1, false));
    let mut resume = args(&f, &run2, &[]);
    resume.resume = Some(run2.clone());
    train::execute(&resume).unwrap();
    assert_eq!(
        weights(&run1.join("last.safetensors")),
        weights(&run2.join("last.safetensors"))
    );
    assert_eq!(
        weights(&run1.join("best.safetensors")),
        weights(&run2.join("best.safetensors"))
    );
    let rows2 = read_metrics(&run2.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), rows2.len());
    for (a, b) in rows.iter().zip(&rows2) {
        assert_eq!(
            (a.epoch, a.step, a.loss, a.val_loss),
            (b.epoch, b.step, b.loss, b.val_loss)
        );
    }

    // An existing run is never overwritten by accident.
    let e = train::execute(&args(&f, &run1, &[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume") && e.contains("--force"), "{e}");
}

#[test]
fn clear_errors_before_any_work() {
    let f = fixture();
    let out = f.root.join("bad");
    let mut a = args(&f, &out, &[]);
    a.imagenet = Some(f.root.join("no-such-folder"));
    let e = train::execute(&a).unwrap_err().to_string();
    assert!(
        e.contains("--imagenet") && e.contains("no-such-folder"),
        "{e}"
    );

    // A split file that names images the data does not have.
    let run = f.root.join("split-run");
    train::execute(&args(&f, &run, &["--max-steps", "1"])).unwrap();
    let split_path = run.join("split.json");
    let text = std::fs::read_to_string(&split_path).unwrap();
    let other = f.root.join("other-split.json");
    std::fs::write(&other, text.replacen("_1000.png", "_9999.png", 1)).unwrap();
    let e = train::execute(&args(
        &f,
        &f.root.join("r3"),
        &["--split-file", other.to_str().unwrap()],
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("disagrees with the data"), "{e}");

    let e = TrainArgs::parse_from(["train", "--imagenet", "x"])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(e.contains("--model"), "{e}");
}

/// A training image that cannot be decoded stops the run with an error naming it, whichever
/// batch of the epoch it falls in (batches are decoded one ahead on a second thread).
#[test]
fn a_corrupt_training_image_is_named() {
    let f = fixture();
    let first = f.root.join("first");
    train::execute(&args(&f, &first, &["--max-steps", "1"])).unwrap();
    let split: data::imagenet_s::ImageNetSSplit =
        serde_json::from_str(&std::fs::read_to_string(first.join("split.json")).unwrap()).unwrap();
    let bad = f.images.join(&split.train.last().unwrap().image);
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    let split_file = first.join("split.json");
    let e = train::execute(&args(
        &f,
        &f.root.join("corrupt"),
        &["--split-file", split_file.to_str().unwrap()],
    ))
    .unwrap_err();
    let name = bad.file_name().unwrap().to_string_lossy().to_string();
    assert!(format!("{e:#}").contains(&name), "{e:#}");
}

#[test]
fn paper_defaults_come_from_the_settings_file() {
    let c = TrainArgs::parse_from(["train", "--model", "deit-b"])
        .resolve()
        .unwrap();
    assert_eq!(
        (c.lr, c.temperature, c.epochs, c.batch_size),
        (8e-7, 0.65, 50, 8)
    );
    assert_eq!(
        (c.lambda_seg, c.lambda_cls, c.lambda_bg, c.lambda_fg),
        (0.8, 0.2, 2.0, 0.3)
    );
    assert_eq!(
        (c.train_classes, c.train_per_class, c.val_per_class),
        (500, 3, 1)
    );
    assert_eq!(c.weight_decay, 1e-4);
    let c = TrainArgs::parse_from(["train", "--model", "vit-l", "--lr", "1e-5"])
        .resolve()
        .unwrap();
    assert_eq!(
        (c.lr, c.temperature, c.model.as_deref()),
        (1e-5, 1.0, Some("vit-large"))
    );
    // The step schedule: x0.85 every two epochs.
    assert!((train::trainer::learning_rate(&c, 5, 0, 100) - 1e-5 * 0.85f64.powi(2)).abs() < 1e-18);
}

/// A run started from a hub-like folder (config.json + weights) records that folder's
/// preprocessing in `best.safetensors`, so the bare file loads with the same preprocessing.
#[test]
fn checkpoints_record_the_preprocessing_they_started_from() {
    let f = fixture();
    let mut cfg = model::VitConfig::vit(32, 2, 2, 32, 8);
    cfg.num_classes = 1000;
    let start = f.root.join("start");
    let vit = model::Vit::random(&cfg, 3, &Device::Cpu).unwrap();
    model::save_params(vit.params(), &start.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 1000,
        "model_args": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2,
                       "num_heads": 2, "num_classes": 1000},
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.485, 0.456, 0.406],
                           "std": [0.229, 0.224, 0.225], "crop_pct": 0.95,
                           "interpolation": "bilinear"}
    });
    std::fs::write(start.join("config.json"), config.to_string()).unwrap();
    let run = f.root.join("run_from_weights");
    let a: Vec<String> = [
        "train",
        "--weights",
        start.to_str().unwrap(),
        "--imagenet",
        f.images.to_str().unwrap(),
        "--imagenet-s",
        f.masks.to_str().unwrap(),
        "--train-classes",
        "2",
        "--train-per-class",
        "2",
        "--val-per-class",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--lr",
        "2e-3",
        "--device",
        "cpu",
        "--quiet",
        "--vis-images",
        "0",
        "--out",
        run.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    train::execute(&TrainArgs::parse_from(a)).unwrap();
    let hub = model::HubOptions {
        cache_dir: f.root.clone(),
        offline: true,
        progress: false,
    };
    let from_folder = model::load(None, Some(start.to_str().unwrap()), &hub, &Device::Cpu).unwrap();
    assert_eq!(from_folder.pretrained.crop_pct, 0.95);
    let best = run.join("best.safetensors");
    let meta = model::weights::read_metadata(&best).unwrap();
    let recorded: model::PretrainedCfg =
        serde_json::from_str(&meta[model::weights::PRETRAINED_METADATA_KEY]).unwrap();
    assert_eq!(recorded, from_folder.pretrained);
    let bare = model::load(None, Some(best.to_str().unwrap()), &hub, &Device::Cpu).unwrap();
    assert_eq!(bare.pretrained, from_folder.pretrained);
}
