//! The embedded benchmark's quick variant end to end, as CI runs it: every output is written,
//! and the pretrained model has the planted background shortcut (it knows the object on a
//! neutral background but follows the background when one is present).

use experiments::demo::{run, DemoArgs};

#[test]
fn quick_demo_produces_every_file_and_the_planted_shortcut() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let args = DemoArgs {
        quick: true,
        out: out.clone(),
        seeds: None,
        n_train: None,
        n_test: None,
        dry_run: false,
        device: "cpu".into(),
    };
    run(&args).unwrap();
    for f in [
        "summary.md",
        "summary.csv",
        "per_seed.csv",
        "accuracy.png",
        "strips/before_after_0.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let eval = out.join("eval/quick-seed-0");
    let rows: Vec<evaluate::results::RobustnessRow> =
        evaluate::results::read_rows(&eval.join("robustness.csv")).unwrap();
    assert_eq!(rows.len(), 3 * 6, "3 models x 6 test sets");
    let top1 = |model: &str, set: &str| {
        rows.iter()
            .find(|r| r.model == model && r.dataset == set)
            .unwrap_or_else(|| panic!("no row for {model} {set}"))
            .top1
    };
    assert!(
        top1("pretrained", "fg_only") >= 90.0,
        "fg_only {}",
        top1("pretrained", "fg_only")
    );
    assert!(
        top1("pretrained", "bg_swap") <= 20.0,
        "bg_swap {}",
        top1("pretrained", "bg_swap")
    );
    let seg: Vec<evaluate::results::SegmentationRow> =
        evaluate::results::read_rows(&eval.join("segmentation.csv")).unwrap();
    assert_eq!(seg.len(), 3 * 2, "3 models x 2 segmentation sets");
    // A second run reuses data and finished runs, and trains again a finished run whose weights
    // are gone (what a fresh clone of the repository has: records, but no git-ignored weights).
    let weights = out.join("runs/quick-seed-0/ce-finetuned/last.safetensors");
    std::fs::remove_file(&weights).unwrap();
    run(&args).unwrap();
    assert!(
        weights.is_file(),
        "{} was not trained again",
        weights.display()
    );
}
