//! The training objective on a tiny random model: its gradient against central finite
//! differences, the explainers' output contract and input errors (a few optimisation steps are
//! in `train/tests/optim.rs`, with the optimizer).

mod common;

use candle_core::{Device, Tensor};
use common::{batch, tiny_model};
use rand::{Rng, SeedableRng};
use relevance::{
    attention_grads, eval_loss, explain, loss_and_grads, loss_given_grads, Explainer, LossConfig,
    MaskMode, RelevanceError,
};
use std::collections::BTreeMap;

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Central differences of the loss with the gradient weights `G_l` and the classification
/// targets held fixed (they are constants of the objective), in f32: the step is large enough
/// for the loss's rounding noise (~1e-8) to stay well below the measured slope.
#[test]
fn gradient_matches_central_differences() {
    let vit = tiny_model(3, 0.5);
    let (x, masks) = batch(5);
    let targets = [1u32, 3];
    // The full objective (with a DeiT temperature), and the relevance part alone.
    let configs = [
        LossConfig {
            temperature: 0.65,
            ..LossConfig::default()
        },
        LossConfig {
            mask_mode: MaskMode::Binary,
            lambda_cls: 0.0,
            ..LossConfig::default()
        },
    ];
    for cfg in configs {
        let mask_mode = cfg.mask_mode;
        let step = loss_and_grads(&vit, &x, &masks, &targets, &cfg).unwrap();
        assert_eq!(step.degenerate_count, 0);
        let f = vit.forward_train(&x).unwrap();
        let g = attention_grads(&f, &targets).unwrap();
        drop(f);
        let pred = step.predictions.clone();
        let loss = || -> f64 {
            let t = loss_given_grads(&vit, &x, &masks, &g, &pred, &cfg).unwrap();
            f64::from(t.total.to_scalar::<f32>().unwrap())
        };
        assert!((loss() - f64::from(step.losses.total)).abs() < 1e-7);

        // Single entries: the three largest gradients of tensors along the whole network.
        let h = 2e-3f32;
        let mut worst = 0f64;
        for name in [
            "patch_embed.proj.weight",
            "pos_embed",
            "cls_token",
            "blocks.0.norm1.weight",
            "blocks.0.attn.qkv.weight",
            "blocks.0.mlp.fc1.weight",
            "blocks.1.attn.qkv.bias",
            "blocks.1.attn.proj.weight",
            "norm.weight",
            "head.weight",
        ] {
            let var = vit.params().get(name).unwrap();
            let p0 = var.as_tensor().copy().unwrap();
            let shape = p0.shape().clone();
            let pv = values(&p0);
            let gv = values(&step.grads[name]);
            let gmax = gv.iter().fold(0f32, |m, v| m.max(v.abs()));
            let after_last_attention = [
                "head.",
                "norm.",
                "blocks.1.attn.proj",
                "blocks.1.norm2",
                "blocks.1.mlp",
            ];
            if cfg.lambda_cls == 0.0 && after_last_attention.iter().any(|p| name.starts_with(p)) {
                // Reached only through the constant gradient weights: no relevance gradient.
                assert_eq!(gmax, 0.0, "{name}");
                continue;
            }
            assert!(gmax > 1e-3, "{name}: gradient too small to test ({gmax})");
            let mut idx: Vec<usize> = (0..gv.len()).collect();
            idx.sort_by(|a, b| gv[*b].abs().total_cmp(&gv[*a].abs()));
            for &i in &idx[..3] {
                let at = |delta: f32| {
                    let mut v = pv.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, &shape, &Device::Cpu).unwrap())
                        .unwrap();
                    loss()
                };
                let fd = (at(h) - at(-h)) / (2.0 * f64::from(h));
                var.set(&p0).unwrap();
                let err = (fd - f64::from(gv[i])).abs() / f64::from(gmax);
                println!(
                    "{mask_mode:?} {name}[{i}]: analytic {:.6e} fd {fd:.6e} err/max|g| {err:.2e}",
                    gv[i]
                );
                // f64::max would drop a NaN error.
                assert!(err.is_finite(), "{name}[{i}]: analytic {} fd {fd}", gv[i]);
                worst = worst.max(err);
            }
        }
        assert!(worst < 2e-3, "worst relative error {worst:e}");

        // A random direction through every parameter at once.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let base = vit.params().snapshot().unwrap();
        let dir: BTreeMap<String, Vec<f32>> = base
            .iter()
            .map(|(k, t)| {
                let v = (0..t.elem_count())
                    .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                    .collect();
                (k.clone(), v)
            })
            .collect();
        let slope: f64 = dir
            .iter()
            .map(|(k, d)| {
                values(&step.grads[k])
                    .iter()
                    .zip(d)
                    .map(|(g, d)| f64::from(*g) * f64::from(*d))
                    .sum::<f64>()
            })
            .sum();
        let eps = 2e-4f32;
        let moved = |s: f32| {
            let m: BTreeMap<String, Tensor> = base
                .iter()
                .map(|(k, t)| {
                    let v: Vec<f32> = values(t)
                        .iter()
                        .zip(&dir[k])
                        .map(|(p, d)| p + s * d)
                        .collect();
                    (
                        k.clone(),
                        Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap(),
                    )
                })
                .collect();
            vit.params().assign(&m).unwrap();
            loss()
        };
        let fd = (moved(eps) - moved(-eps)) / (2.0 * f64::from(eps));
        vit.params().assign(&base).unwrap();
        println!("{mask_mode:?} direction: analytic {slope:.6e} fd {fd:.6e}");
        assert!((fd - slope).abs() < 2e-3 * slope.abs(), "{fd} vs {slope}");
    }
}

#[test]
fn every_parameter_gets_a_gradient_and_eval_agrees() {
    let vit = tiny_model(1, 0.5);
    let (x, masks) = batch(2);
    let targets = [4u32, 0];
    let cfg = LossConfig::default();
    let s = loss_and_grads(&vit, &x, &masks, &targets, &cfg).unwrap();
    assert_eq!(s.grads.len(), vit.params().len());
    for (name, g) in &s.grads {
        let n: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(n > 0.0 && n.is_finite(), "{name}: |g|² = {n}");
    }
    let e = eval_loss(&vit, &x, &masks, &targets, &cfg).unwrap();
    assert_eq!(e.losses, s.losses);
    assert_eq!(values(&e.relevance), values(&s.relevance));
    assert_eq!(e.predictions, s.predictions);
    // The map of the training step is the map of `relevance_map` for the same targets.
    let r = relevance::relevance_map(&vit, &x, Some(&targets)).unwrap();
    assert_eq!(values(&r.map), values(&s.relevance));
    assert_eq!(s.relevance.dims(), &[2, 1, 16, 16]);
}

#[test]
fn explainers_share_the_output_contract() {
    let vit = tiny_model(4, 0.5);
    let (x, _) = batch(3);
    let pred: Vec<u32> = vit
        .forward(&x)
        .unwrap()
        .argmax(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    for e in Explainer::ALL {
        assert_eq!(e.name().parse::<Explainer>().unwrap(), e);
        let r = explain(&vit, &x, e, None).unwrap();
        assert_eq!(r.map.dims(), &[2, 1, 16, 16], "{e}");
        assert_eq!(r.targets, pred, "{e}");
        assert_eq!(r.degenerate_count(), 0, "{e}");
        let v = values(&r.map);
        for img in v.chunks(256) {
            let lo = img.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = img.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!((lo, hi), (0.0, 1.0), "{e}");
        }
        let other = explain(&vit, &x, e, Some(&[(pred[0] + 1) % 5, pred[1]])).unwrap();
        let changed = values(&other.map)[..256] != v[..256];
        assert_eq!(changed, e.is_class_specific(), "{e}");
    }
    assert!("lrp".parse::<Explainer>().is_err());
}

#[test]
fn input_errors_say_what_is_wrong() {
    let vit = tiny_model(1, 0.5);
    let (x, masks) = batch(2);
    let cfg = LossConfig::default();
    let bad = masks.narrow(2, 0, 8).unwrap();
    let e = loss_and_grads(&vit, &x, &bad, &[0, 1], &cfg).unwrap_err();
    assert!(matches!(e, RelevanceError::MaskShape { .. }), "{e}");
    assert!(e.to_string().contains("[2, 1, 8, 16]"), "{e}");
    let e = loss_and_grads(&vit, &x, &masks, &[0], &cfg).unwrap_err();
    assert!(
        e.to_string()
            .contains("1 target class(es) given for a batch of 2"),
        "{e}"
    );
    let e = relevance::relevance_map(&vit, &x, Some(&[0, 9])).unwrap_err();
    assert!(e.to_string().contains("target class 9 of image 1"), "{e}");
    let e = eval_loss(
        &vit,
        &x,
        &masks,
        &[0, 1],
        &LossConfig::with_temperature(-1.0),
    )
    .unwrap_err();
    assert!(e.to_string().contains("temperature"), "{e}");
}
