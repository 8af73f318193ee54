//! AdamW against a hand computation of two steps (with a learning-rate change between them),
//! an interrupted run resumed from a saved state continuing bit for bit, and the relevance
//! objective's loss going down under it.

#[path = "../../relevance/tests/common/mod.rs"]
mod common;

use candle_core::{Device, Tensor};
use common::{batch, tiny_model};
use relevance::{eval_loss, loss_and_grads, LossConfig};
use std::collections::BTreeMap;
use train::optim::{AdamW, AdamWConfig, OptimError};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// A deterministic fake gradient per parameter, with some exact zeros.
fn grads(vit: &model::Vit, k: f32) -> BTreeMap<String, Tensor> {
    vit.params()
        .iter()
        .enumerate()
        .map(|(j, (name, var))| {
            let n = var.elem_count();
            let v: Vec<f32> = (0..n)
                .map(|i| {
                    if (i + j) % 7 == 0 {
                        0.0
                    } else {
                        ((i as f32 * 0.37 + j as f32 + k).sin()) * 10f32.powi((i % 5) as i32 - 3)
                    }
                })
                .collect();
            (
                name.clone(),
                Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

#[test]
fn two_steps_match_hand_computation() {
    let vit = tiny_model(2, 0.5);
    let cfg = AdamWConfig {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let lr2 = 4e-3;
    let p0 = vit.params().snapshot().unwrap();
    let (g1, g2) = (grads(&vit, 0.0), grads(&vit, 1.0));
    let mut opt = AdamW::new(cfg);
    opt.step(vit.params(), &g1).unwrap();
    opt.set_lr(lr2);
    opt.step(vit.params(), &g2).unwrap();
    assert_eq!(opt.steps(), 2);
    let p2 = vit.params().snapshot().unwrap();
    let (b1, b2, eps, wd) = (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay);
    let mut worst = 0f64;
    for (name, p) in &p0 {
        let (p, a, b, got) = (
            values(p),
            values(&g1[name]),
            values(&g2[name]),
            values(&p2[name]),
        );
        let mut hand = Vec::with_capacity(p.len());
        for i in 0..p.len() {
            let (g1, g2) = (f64::from(a[i]), f64::from(b[i]));
            let mut x = f64::from(p[i]);
            // Step 1.
            x *= 1.0 - cfg.lr * wd;
            let (m, v) = ((1.0 - b1) * g1, (1.0 - b2) * g1 * g1);
            x -= cfg.lr / (1.0 - b1) * m / (v.sqrt() / (1.0 - b2).sqrt() + eps);
            // Step 2 at the new rate; the moments carry over.
            x *= 1.0 - lr2 * wd;
            let (m, v) = (b1 * m + (1.0 - b1) * g2, b2 * v + (1.0 - b2) * g2 * g2);
            x -= lr2 / (1.0 - b1 * b1) * m / (v.sqrt() / (1.0 - b2 * b2).sqrt() + eps);
            hand.push(x);
        }
        let got: Vec<f64> = got.iter().map(|&v| f64::from(v)).collect();
        let d = model::compare(name, &got, &hand).unwrap();
        worst = worst.max(d.max_abs_diff);
    }
    println!("max |ours − hand| after two steps: {worst:e}");
    assert!(worst < 1e-6, "{worst}");
    let st = opt.state_tensors().unwrap();
    assert_eq!(st.len(), 2 * p0.len());
    let g = values(&g1["head.bias"]);
    let h = values(&g2["head.bias"]);
    let m = values(&st["exp_avg.head.bias"]);
    for i in 0..g.len() {
        let want = 0.9 * 0.1 * g[i] + 0.1 * h[i];
        // `<=` fails on NaN.
        assert!(
            (m[i] - want).abs() <= 1e-7 * want.abs().max(1e-3),
            "{} vs {want}",
            m[i]
        );
    }
}

#[test]
fn resumed_run_continues_bit_identically() {
    let cfg = AdamWConfig {
        lr: 3e-3,
        weight_decay: 1e-4,
        ..AdamWConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/optimizer.safetensors");

    // Uninterrupted: three steps, state saved after the second.
    let a = tiny_model(5, 0.5);
    let mut opt = AdamW::new(cfg);
    opt.step(a.params(), &grads(&a, 0.0)).unwrap();
    opt.set_lr(cfg.lr * 0.85);
    opt.step(a.params(), &grads(&a, 1.0)).unwrap();
    opt.save(&path).unwrap();
    let saved_params = a.params().snapshot().unwrap();
    opt.step(a.params(), &grads(&a, 2.0)).unwrap();

    // Resumed: a fresh model with the saved parameters, the optimizer read back from disk.
    let b = tiny_model(6, 0.5);
    b.params().assign(&saved_params).unwrap();
    let mut resumed = AdamW::load(&path, &Device::Cpu).unwrap();
    assert_eq!(resumed.steps(), 2);
    assert_eq!(resumed.lr(), cfg.lr * 0.85);
    assert_eq!(resumed.config().weight_decay, cfg.weight_decay);
    resumed.step(b.params(), &grads(&b, 2.0)).unwrap();

    let (pa, pb) = (
        a.params().snapshot().unwrap(),
        b.params().snapshot().unwrap(),
    );
    for (name, t) in &pa {
        let (x, y) = (values(t), values(&pb[name]));
        assert!(
            x.iter().zip(&y).all(|(u, v)| u.to_bits() == v.to_bits()),
            "{name}"
        );
    }
    let (sa, sb) = (
        opt.state_tensors().unwrap(),
        resumed.state_tensors().unwrap(),
    );
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (k, t) in &sa {
        assert_eq!(values(t), values(&sb[k]), "{k}");
    }
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["optimizer.safetensors"]);
}

#[test]
fn bad_state_and_missing_gradients_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let e = AdamW::load(&missing, &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("nope.safetensors"), "{e}");

    // A model checkpoint is not an optimizer state.
    let vit = tiny_model(1, 0.5);
    let ckpt = dir.path().join("model.safetensors");
    model::save_params(vit.params(), &ckpt).unwrap();
    let e = AdamW::load(&ckpt, &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("not an optimizer state"), "{e}");

    let mut g = grads(&vit, 0.0);
    g.remove("pos_embed");
    let mut opt = AdamW::new(AdamWConfig::default());
    let e = opt.step(vit.params(), &g).unwrap_err();
    assert!(
        matches!(e, OptimError::MissingGradient(ref n) if n == "pos_embed"),
        "{e}"
    );
    assert_eq!(opt.steps(), 0);
}

#[test]
fn loss_decreases_over_a_few_steps() {
    let vit = tiny_model(7, 0.5);
    let (x, masks) = batch(8);
    let targets = [0u32, 2];
    let cfg = LossConfig::default();
    let mut opt = AdamW::new(AdamWConfig {
        lr: 3e-3,
        ..AdamWConfig::default()
    });
    let first = eval_loss(&vit, &x, &masks, &targets, &cfg).unwrap().losses;
    let mut seen = Vec::new();
    for _ in 0..8 {
        let s = loss_and_grads(&vit, &x, &masks, &targets, &cfg).unwrap();
        seen.push(s.losses.total);
        opt.step(vit.params(), &s.grads).unwrap();
    }
    let last = eval_loss(&vit, &x, &masks, &targets, &cfg).unwrap().losses;
    println!(
        "total loss per step {seen:?} → {}; first {first:?}, last {last:?}",
        last.total
    );
    assert_eq!(seen[0], first.total);
    assert_eq!(opt.steps(), 8);
    assert!(last.total < 0.9 * first.total, "{first:?} → {last:?}");
    assert!(
        last.segmentation < first.segmentation,
        "{first:?} → {last:?}"
    );
}
