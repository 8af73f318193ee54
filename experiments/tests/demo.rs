//! The embedded benchmark's quick variant end to end, as CI runs it: every output is written,
//! the pretrained model has the planted background shortcut (it knows the object on a neutral
//! background but follows the background when one is present), and relevance finetuning moves
//! it towards the object. One seed's figures move by about ±10 points between CPUs, so only
//! properties far from their thresholds on every machine are asserted; the design's ranges
//! are for means over seeds (`results/demo/summary.md`).

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
    // The quick variant's report goes into its own folder: the full tables at the top stay.
    let report = out.join("quick");
    for f in [
        "summary.md",
        "summary.csv",
        "per_seed.csv",
        "accuracy.png",
        "strips/before_after_0.png",
    ] {
        assert!(report.join(f).is_file(), "{f} missing");
        assert!(!out.join(f).exists(), "{f} written over the full report");
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
    // The planted shortcut (design §5's regime check).
    assert!(
        top1("pretrained", "id") >= 99.0,
        "id {}",
        top1("pretrained", "id")
    );
    let fg_only = top1("pretrained", "fg_only");
    assert!(fg_only >= 90.0, "fg_only {fg_only}");
    let bg_swap = top1("pretrained", "bg_swap");
    assert!(bg_swap <= 20.0, "bg_swap {bg_swap}");
    // The effect's sign with a wide margin: the design saw +17 to +27 points on three seeds,
    // one seed ranges from about +9 to +20 across machines.
    let gain = top1("rel-finetuned", "bg_swap") - top1("ce-finetuned", "bg_swap");
    assert!(gain >= 3.0, "rel - ce on bg_swap {gain:+.1}");
    let seg: Vec<evaluate::results::SegmentationRow> =
        evaluate::results::read_rows(&eval.join("segmentation.csv")).unwrap();
    assert_eq!(seg.len(), 3 * 2, "3 models x 2 segmentation sets");
    // Relevance mass on the object grows with relevance finetuning (design: 11 → 16–21 %).
    let mass = |model: &str| {
        seg.iter()
            .find(|r| r.model == model && r.dataset == "id" && r.explainer == "relevance")
            .unwrap_or_else(|| panic!("no segmentation row for {model}"))
            .mass_acc
    };
    assert!(
        mass("rel-finetuned") > mass("pretrained") + 2.0,
        "mass {} -> {}",
        mass("pretrained"),
        mass("rel-finetuned")
    );
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(summary.contains("One seed only"), "{summary}");
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
