//! The result-table merge (`robustness.csv`, `segmentation.csv`) on a fixed budget of
//! deterministically mutated tables: Ok or a typed error, never a panic. Also replays the
//! crash corpus under `fuzz/regressions/`.

#[path = "../../model/tests/support/mutate.rs"]
mod mutate;

use evaluate::results::{self, RobustnessRow, SegmentationRow, TableRow};
use std::path::Path;

fn rob(dataset: &str, top1: f64) -> RobustnessRow {
    RobustnessRow {
        model: "vit_base".into(),
        checkpoint: "pretrained".into(),
        checkpoint_sha256: "0123456789ab".into(),
        dataset: dataset.into(),
        protocol: "paper".into(),
        images: 7500,
        top1,
        top5: 40.0,
        top1_err: 100.0 - top1,
        top5_err: 60.0,
        images_per_s: 812.345,
        date: "2026-01-02".into(),
        git_rev: "abc".into(),
    }
}

fn merge<R: TableRow>(bytes: &[u8], new: &[R]) -> bool {
    let path = Path::new("robustness.csv");
    match results::parse_rows::<R>(bytes, path) {
        Ok(rows) => results::merged(rows, new, path).is_ok(),
        Err(_) => false,
    }
}

pub fn merge_tables(bytes: &[u8]) -> bool {
    let a = merge(bytes, &[rob("imagenet-a", 10.0)]);
    let b = merge::<SegmentationRow>(bytes, &[]);
    a || b
}

#[test]
fn results_csv_merge_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("robustness.csv");
    results::merge_rows(&p, &[rob("imagenet-r", 30.5), rob("objectnet", 20.25)]).unwrap();
    let seg = format!(
        "{}\nvit_base,pretrained,0123456789ab,imagenet-seg,relevance,4276,0.75,0.5,0.8,0.6,0.7,2026-01-02,abc\n",
        SegmentationRow::HEADER.join(",")
    );
    let seeds = vec![std::fs::read(&p).unwrap(), seg.into_bytes()];
    assert!(merge(&seeds[0], &[rob("imagenet-a", 10.0)]));
    assert!(merge::<SegmentationRow>(&seeds[1], &[]));
    mutate::never_panics(
        "results_csv",
        0xC5F,
        10_000,
        &seeds,
        &mutate::regressions("results_csv"),
        merge_tables,
    );
}
