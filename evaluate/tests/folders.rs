//! Runs of `evaluate::run` on generic folders, several checkpoints at once, and the errors
//! and `--check` output for missing datasets, with the tiny model of `common`.
//!
//! Kept apart from `suites.rs`: the HDF5 library opens files without close-on-exec, so a
//! `git` child started by a test running in parallel would inherit the write lock of the
//! `gtsegs_ijcv.mat` that test writes.

mod common;

use common::{close, run, write_model, write_model_with, write_solid, POSITIONS};
use data::synthetic::{write_benchmark, SyntheticSpec};
use data::Benchmark;

#[test]
fn folders_and_several_checkpoints_in_one_run() {
    let d = tempfile::tempdir().unwrap();
    let bench = d.path().join("bench/test");
    let q = |c: u32| POSITIONS.iter().position(|&p| p == c).unwrap();
    // Classes 0 (n01440764) and 1 (n01443537) at the model's input size (16x16), so the
    // transform is the identity; one class-1 image sits at class 263 (top-5 only).
    write_solid(&bench.join("n01440764/a.png"), 16, 16, q(0));
    write_solid(&bench.join("n01443537/a.png"), 16, 16, q(1));
    write_solid(&bench.join("n01443537/b.png"), 16, 16, q(263));
    // Images with ImageNet-S masks: foreground 8x8 of 16x16 (ids 1), a 2-pixel ignore ring.
    let masks = d.path().join("bench/test-masks");
    for (wnid, name) in [("n01440764", "a"), ("n01443537", "a")] {
        let m = data::synthetic::imagenet_s_mask(16, 16, &[1]);
        let p = masks.join(wnid).join(format!("{name}.png"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        m.save(&p).unwrap();
    }
    let before = d.path().join("runs/before");
    let after = d.path().join("runs/after");
    // Bilinear like the paper protocol: at the input size both protocols see the same pixels.
    write_model_with(&before, &POSITIONS, "bilinear");
    // "After": classes 1 and 263 swap places, so the b.png image becomes a top-1 hit and
    // the a.png image of class 1 a top-5 hit.
    let mut swapped = POSITIONS;
    swapped.swap(q(1), q(263));
    write_model_with(&after, &swapped, "bilinear");
    let out = d.path().join("out");
    let folder = format!("bench={}", bench.display());
    let seg = format!("bench-seg={}:{}", bench.display(), masks.display());
    let s = run(&[
        "--checkpoint",
        before.to_str().unwrap(),
        "--checkpoint",
        after.to_str().unwrap(),
        "--folder",
        &folder,
        "--seg-folder",
        &seg,
        "--explainer",
        "relevance",
        "--data-root",
        d.path().join("nothing").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
    ]);
    assert!(s.skipped.is_empty(), "only the folders were asked for");
    let got: Vec<(&str, &str, u64, f64, f64)> = s
        .robustness
        .iter()
        .map(|r| {
            (
                r.model.as_str(),
                r.protocol.as_str(),
                r.images,
                r.top1,
                r.top5,
            )
        })
        .collect();
    let (two, all) = (200.0 / 3.0, 100.0);
    assert_eq!(got.len(), 4);
    for (i, (model, protocol, images, t1, t5)) in got.into_iter().enumerate() {
        assert_eq!(model, ["before", "before", "after", "after"][i]);
        assert_eq!(protocol, ["paper", "official"][i % 2]);
        assert_eq!(images, 3);
        assert!(close(t1, two) && close(t5, all), "{i}: {t1} {t5}");
    }
    // Identical preprocessing under both protocols: one pass over the folder.
    let p = s.planned.iter().find(|p| p.dataset == "bench").unwrap();
    assert_eq!((p.passes, p.images), (1, 3));
    // b.png has no mask and is left out; 2 x 192 background pixels of 512 are right.
    assert_eq!(s.segmentation.len(), 2);
    for r in &s.segmentation {
        assert_eq!((r.dataset.as_str(), r.images), ("bench-seg", 2));
        assert!(close(r.pixel_acc, 75.0) && close(r.miou, 37.5) && close(r.map, 50.0));
    }
    let seg_csv = std::fs::read_to_string(out.join("segmentation.csv")).unwrap();
    assert!(seg_csv.starts_with(
        "model,checkpoint,checkpoint_sha256,dataset,explainer,images,pixel_acc,miou,map,mass_acc,pointing,date,git_rev\n"
    ));
    // One chart per model label here (the two checkpoints live in differently named folders).
    let chart = out.join("chart_before_paper.png");
    assert!(chart.is_file());
    assert!(s.command.contains("--folder bench="), "{}", s.command);

    // A segmentation-only run leaves the charts as the robustness run drew them (it knows no
    // --folder order); a run with the folder draws them again.
    std::fs::write(&chart, b"drawn by the robustness run").unwrap();
    let again = |sets: &[&str]| {
        let mut a = vec!["--checkpoint", before.to_str().unwrap()];
        a.extend_from_slice(sets);
        a.extend_from_slice(&["--explainer", "relevance", "--out", out.to_str().unwrap()]);
        a.extend_from_slice(&["--device", "cpu", "--quiet"]);
        run(&a)
    };
    let s = again(&["--seg-folder", &seg]);
    assert!(s.robustness.is_empty() && s.segmentation.len() == 1);
    assert_eq!(
        std::fs::read(&chart).unwrap(),
        b"drawn by the robustness run"
    );
    again(&["--folder", &folder]);
    assert!(std::fs::read(&chart).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn missing_named_dataset_is_an_error_and_check_runs_nothing() {
    let d = tempfile::tempdir().unwrap();
    let model_dir = d.path().join("m");
    write_model(&model_dir, &POSITIONS);
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "evaluate",
            "--checkpoint",
            model_dir.to_str().unwrap(),
            "--data-root",
            d.path().to_str().unwrap(),
            "--out",
            d.path().join("out").to_str().unwrap(),
            "--device",
            "cpu",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        <evaluate::EvalArgs as clap::Parser>::try_parse_from(a).unwrap()
    };
    let e = evaluate::run(&args(&["--suite", "imagenet-a"])).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("imagenet-a") && msg.contains("--imagenet-a PATH"),
        "{msg}"
    );
    // Everything missing under a group: reported and skipped, then nothing left to run.
    let e = evaluate::run(&args(&["--suite", "all"])).unwrap_err();
    assert!(format!("{e:#}").contains("no dataset found"), "{e:#}");

    write_benchmark(
        Benchmark::ImageNetR,
        d.path(),
        &SyntheticSpec {
            bad_files: false,
            ..Default::default()
        },
    )
    .unwrap();
    let s = evaluate::run(&args(&["--suite", "all", "--check"])).unwrap();
    assert_eq!(s.skipped.len(), 9);
    assert_eq!(s.planned.len(), 1);
    assert_eq!(
        (
            s.planned[0].dataset.as_str(),
            s.planned[0].images,
            s.planned[0].passes
        ),
        ("imagenet-r", 6, 2)
    );
    assert!(s.robustness.is_empty());
    assert!(!d.path().join("out").exists(), "--check writes nothing");
}

#[test]
fn bf16_rows_are_kept_apart_from_f32_and_agree_with_them() {
    let d = tempfile::tempdir().unwrap();
    let bench = d.path().join("bench/test");
    let q = |c: u32| POSITIONS.iter().position(|&p| p == c).unwrap();
    write_solid(&bench.join("n01440764/a.png"), 16, 16, q(0));
    write_solid(&bench.join("n01443537/a.png"), 16, 16, q(1));
    write_solid(&bench.join("n01443537/b.png"), 16, 16, q(263));
    let ckpt = d.path().join("runs/m");
    write_model_with(&ckpt, &POSITIONS, "bilinear");
    let out = d.path().join("out");
    let folder = format!("bench={}", bench.display());
    let args = |dtype: &str| -> Vec<String> {
        [
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--folder",
            &folder,
            "--data-root",
            d.path().join("nothing").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--dtype",
            dtype,
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let f32_args = args("f32");
    let bf16_args = args("bf16");
    let a = run(&f32_args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let b = run(&bf16_args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(a.robustness.len(), 2);
    assert_eq!(b.robustness.len(), 2);
    for (x, y) in a.robustness.iter().zip(&b.robustness) {
        assert_eq!(y.checkpoint, format!("{} [bf16]", x.checkpoint));
        assert_eq!((x.images, x.top1, x.top5), (y.images, y.top1, y.top5));
    }
    // Both precisions' rows are in the table: four rows, none replaced.
    let csv = std::fs::read_to_string(out.join("robustness.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    assert_eq!(csv.matches("[bf16]").count(), 2, "{csv}");
}
