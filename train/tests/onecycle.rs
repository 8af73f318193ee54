//! The one-cycle schedule against hand-computed values of PyTorch's `OneCycleLR` formulas
//! (`anneal_strategy='cos'`, `cycle_momentum=True`, `pct_start=0.1`, `div_factor=25`,
//! `final_div_factor=1e4`, momentum 0.95 → 0.85 → 0.95).

use clap::Parser;
use train::trainer::{beta1, learning_rate, one_cycle};
use train::TrainArgs;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-30)
}

#[track_caller]
fn check(step: usize, total: usize, lr: f64, b1: f64) {
    let (l, b) = one_cycle(2e-3, step, total);
    assert!(close(l, lr), "step {step}/{total}: lr {l}, expected {lr}");
    assert!(
        close(b, b1),
        "step {step}/{total}: beta1 {b}, expected {b1}"
    );
}

#[test]
fn phases_follow_pytorch_onecyclelr() {
    let (peak, initial, min) = (2e-3, 2e-3 / 25.0, 2e-3 / 25.0 / 1e4);
    // 30 steps: warm-up ends at step 0.1·30 − 1 = 2, the cycle at step 29.
    check(0, 30, initial, 0.95);
    // Half-way through the warm-up: cos(π/2) = 0, the mean of both ends.
    check(1, 30, (initial + peak) / 2.0, 0.90);
    check(2, 30, peak, 0.85);
    // A third into the decay, (11 − 2)/(29 − 2): 1 + cos(π/3) = 1.5, three quarters of the way
    // from the end value back to the start value.
    check(11, 30, min + 0.75 * (peak - min), 0.95 - 0.75 * 0.10);
    check(29, 30, min, 0.95);
    // 20 steps: warm-up ends at step 1; step 10 is half-way through the decay.
    check(1, 20, peak, 0.85);
    check(10, 20, (peak + min) / 2.0, 0.90);
    assert!(close(min, 8e-9));
    // Monotone within each phase; β₁ moves against the learning rate.
    let total = 320;
    let seq: Vec<(f64, f64)> = (0..total).map(|s| one_cycle(2e-3, s, total)).collect();
    for w in seq[..32].windows(2) {
        assert!(w[1].0 > w[0].0 && w[1].1 < w[0].1);
    }
    for w in seq[31..].windows(2) {
        assert!(w[1].0 < w[0].0 && w[1].1 > w[0].1);
    }
}

#[test]
fn trainer_cycles_beta1_only_under_onecycle() {
    let c = TrainArgs::parse_from([
        "train",
        "--model",
        "vit-b",
        "--lr",
        "2e-3",
        "--schedule",
        "onecycle",
    ])
    .resolve()
    .unwrap();
    assert!(close(
        learning_rate(&c, 0, 11, 30),
        2e-3 - 0.25 * (2e-3 - 8e-9)
    ));
    assert!(close(beta1(&c, 11, 30), 0.875));
    assert!(close(beta1(&c, 0, 30), 0.95));
    let c = TrainArgs::parse_from(["train", "--model", "vit-b", "--schedule", "constant"])
        .resolve()
        .unwrap();
    assert_eq!(beta1(&c, 11, 30), c.beta1);
    assert_eq!(c.beta1, 0.9);
}
