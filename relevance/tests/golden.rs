//! The relevance map, the loss and every parameter gradient against the PyTorch reference
//! fixtures (`$ROBUSTVIT_FIXTURES`, else `tests/fixtures/public`); the AdamW step that follows
//! is checked with the optimizer, in `train/tests/golden_optim.rs`.
//!
//! Nothing about the set is assumed: the model comes from its `config.json`, the batch size,
//! depth and sizes from the tensors, the loss weights from `meta.json`.
//!
//! Tolerances (per tensor, `|a − b| ≤ atol + rtol · max|ref|`), from the fixture README:
//! forward quantities atol 1e-5, rtol 1e-4; gradients atol 1e-6, rtol 1e-3. The key-bias
//! slice `qkv.bias[D:2D]` has a mathematically zero gradient and is compared absolutely.

#[path = "../../tests/support/golden.rs"]
mod golden_support;

use candle_core::{Tensor, Var};
use golden_support::{ints, load, loss_config, vec, Report, FWD, GRAD};
use relevance::LossConfig;

#[test]
fn relevance_loss_and_gradients_match_reference() {
    let dir = model::fixture_dir();
    let dev = model::test_device();
    let m = model::load_fixture_model(&dir, &dev).unwrap();
    let vit = &m.vit;
    let cfg = vit.config().clone();
    let inputs: std::collections::HashMap<String, Tensor> = load(&dir, "inputs.safetensors")
        .into_iter()
        .map(|(k, v)| (k, v.to_device(&dev).unwrap()))
        .collect();
    let out = load(&dir, "outputs.safetensors");
    let grads_ref = load(&dir, "grads.safetensors");
    let loss_cfg = loss_config(&dir);
    let x = &inputs["images"];
    let masks = &inputs["masks"];
    let targets = ints(&inputs["target"]);
    let b = x.dim(0).unwrap();
    assert_eq!(targets.len(), b);
    println!(
        "set {}: batch {b}, {}x{} px, patch {}, depth {}, {} heads, D {}, {} classes; {:?}",
        dir.display(),
        cfg.img_size,
        cfg.img_size,
        cfg.patch_size,
        cfg.depth,
        cfg.num_heads,
        cfg.embed_dim,
        cfg.num_classes,
        loss_cfg
    );
    let mut r = Report::default();

    // The pixels: denormalising the input gives back the stored 8-bit image.
    let mean: [f32; 3] = vec(&inputs["mean"]).try_into().unwrap();
    let std: [f32; 3] = vec(&inputs["std"]).try_into().unwrap();
    let u8s = inputs["images_u8"]
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    for i in 0..b {
        let img = relevance::render::to_rgb_image(&x.get(i).unwrap(), mean, std).unwrap();
        let got: Vec<f32> = img.as_raw().iter().map(|v| f32::from(*v)).collect();
        let got = Tensor::from_vec(got, u8s.get(i).unwrap().shape(), &dev).unwrap();
        r.check(
            &format!("images_u8[{i}] (denormalised)"),
            &got,
            &u8s.get(i).unwrap(),
            (1.0, 0.0),
        );
    }

    // Relevance map and every intermediate.
    let parts = relevance::relevance_parts(vit, x, Some(&targets)).unwrap();
    r.check("logits", &parts.logits, &out["logits"], FWD);
    let pred = ints(&out["pred"]);
    let ours_pred: Vec<u32> = parts.logits.argmax(1).unwrap().to_vec1().unwrap();
    assert_eq!(ours_pred, pred, "top-1 predictions");
    assert_eq!(parts.attn_grad.len(), cfg.depth);
    assert!(!out.contains_key(&format!("attn_grad.{}", cfg.depth)));
    for l in 0..cfg.depth {
        r.check(
            &format!("attn_grad.{l}"),
            &parts.attn_grad[l],
            &out[&format!("attn_grad.{l}")],
            GRAD,
        );
        r.check(
            &format!("cam.{l}"),
            &parts.cam[l],
            &out[&format!("cam.{l}")],
            FWD,
        );
        r.check(
            &format!("rollout.{l}"),
            &parts.rollout[l],
            &out[&format!("rollout.{l}")],
            FWD,
        );
    }
    r.check(
        "relevance_tokens",
        &parts.tokens,
        &out["relevance_tokens"],
        FWD,
    );
    r.check("relevance_grid", &parts.grid, &out["relevance_grid"], FWD);
    r.check(
        "relevance_upsampled",
        &parts.upsampled,
        &out["relevance_upsampled"],
        FWD,
    );
    r.check(
        "relevance_min",
        &parts.normalised.min,
        &out["relevance_min"],
        FWD,
    );
    r.check(
        "relevance_max",
        &parts.normalised.max,
        &out["relevance_max"],
        FWD,
    );
    r.check("relevance", parts.relevance(), &out["relevance"], FWD);
    assert!(parts.normalised.degenerate.iter().all(|d| !d));
    let up =
        relevance::Upsampler::with_scale((cfg.grid(), cfg.grid()), cfg.patch_size, &dev).unwrap();
    r.check(
        "upsample_matrix",
        up.row_matrix(),
        &out["upsample_matrix"],
        (1e-7, 0.0),
    );

    // The map for the model's own prediction when no targets are given (what the segmentation
    // test evaluates): it picks the predicted classes, equals the map asked for those classes,
    // and matches the reference map on every image whose prediction is the fixture's target.
    let own = relevance::relevance_map(vit, x, None).unwrap();
    assert_eq!(own.targets, pred);
    let for_pred = relevance::relevance_map(vit, x, Some(&pred)).unwrap();
    r.check(
        "relevance_map(None) vs relevance_map(pred)",
        &own.map,
        &for_pred.map,
        (0.0, 0.0),
    );
    let agree: Vec<usize> = (0..b).filter(|&i| pred[i] == targets[i]).collect();
    assert!(
        !agree.is_empty(),
        "the fixture set needs an image whose prediction is its target"
    );
    for &i in &agree {
        r.check(
            &format!("relevance_map(None)[{i}] (predicted = target)"),
            &own.map.get(i).unwrap(),
            &out["relevance"].get(i).unwrap(),
            FWD,
        );
    }

    // Losses from the map.
    let t =
        relevance::loss_terms(parts.relevance(), masks, &parts.logits, &pred, &loss_cfg).unwrap();
    let named = [
        ("loss.total", &t.total),
        ("loss.segmentation", &t.segmentation),
        ("loss.background", &t.background),
        ("loss.foreground", &t.foreground),
        ("loss.classification", &t.classification),
    ];
    for (k, v) in named {
        r.check(k, v, &out[k], FWD);
    }
    // d loss.classification / d logits.
    let z = Var::from_tensor(&parts.logits.detach()).unwrap();
    let rel0 = parts.relevance().detach();
    let cls = relevance::loss_terms(&rel0, masks, z.as_tensor(), &pred, &loss_cfg).unwrap();
    let g = cls.classification.backward().unwrap();
    r.check(
        "cls_grad.logits",
        g.get(z.as_tensor()).unwrap(),
        &out["cls_grad.logits"],
        GRAD,
    );

    // Segmentation gradients down the chain, each stage fed by a fresh leaf: relevance,
    // upsampled map (min/max ties), grid (upsampling), cams (rollout).
    let seg_grad = |leaf: &Var, rel: &Tensor| -> Tensor {
        let t =
            relevance::loss_terms(rel, masks, &parts.logits.detach(), &pred, &loss_cfg).unwrap();
        t.segmentation
            .backward()
            .unwrap()
            .get(leaf.as_tensor())
            .unwrap()
            .clone()
    };
    let v = Var::from_tensor(&rel0).unwrap();
    r.check(
        "seg_grad.relevance",
        &seg_grad(&v, v.as_tensor()),
        &out["seg_grad.relevance"],
        GRAD,
    );
    // Which of several tied extremes receives the gradient is implementation-dependent (the
    // bottom/right border bands differ by ulps); with PyTorch's picks the gradient must agree
    // element by element, with ours the values must be the same extremes.
    let (tmin, tmax) = (
        ints(&out["relevance_argmin"]),
        ints(&out["relevance_argmax"]),
    );
    println!(
        "min/max element picked: ours {:?}/{:?}, reference {tmin:?}/{tmax:?}",
        parts.normalised.argmin, parts.normalised.argmax
    );
    let v = Var::from_tensor(&parts.upsampled.detach()).unwrap();
    let n = relevance::min_max_normalise_at(v.as_tensor(), &tmin, &tmax).unwrap();
    r.check(
        "seg_grad.relevance_upsampled (reference picks)",
        &seg_grad(&v, &n.map),
        &out["seg_grad.relevance_upsampled"],
        GRAD,
    );
    r.check(
        "relevance (reference picks)",
        &n.map,
        &out["relevance"],
        FWD,
    );
    let v = Var::from_tensor(&parts.grid.detach()).unwrap();
    let n = relevance::min_max_normalise(&up.forward(v.as_tensor()).unwrap()).unwrap();
    r.check(
        "seg_grad.relevance_grid",
        &seg_grad(&v, &n.map),
        &out["seg_grad.relevance_grid"],
        GRAD,
    );
    let cams: Vec<Var> = parts
        .cam
        .iter()
        .map(|c| Var::from_tensor(&c.detach()).unwrap())
        .collect();
    let ct: Vec<Tensor> = cams.iter().map(|c| c.as_tensor().clone()).collect();
    let row = relevance::rollout_cls(&ct).unwrap();
    let tokens = row
        .narrow(1, 1, cfg.num_patches())
        .unwrap()
        .contiguous()
        .unwrap();
    let grid = tokens.reshape((b, 1, cfg.grid(), cfg.grid())).unwrap();
    let n = relevance::min_max_normalise(&up.forward(&grid).unwrap()).unwrap();
    let t = relevance::loss_terms(&n.map, masks, &parts.logits.detach(), &pred, &loss_cfg).unwrap();
    let gs = t.segmentation.backward().unwrap();
    for (l, c) in cams.iter().enumerate() {
        r.check(
            &format!("seg_grad.cam.{l}"),
            gs.get(c.as_tensor()).unwrap(),
            &out[&format!("seg_grad.cam.{l}")],
            GRAD,
        );
    }
    drop(parts);

    // One training step: losses and the gradient of every parameter.
    let step = relevance::loss_and_grads(vit, x, masks, &targets, &loss_cfg).unwrap();
    assert_eq!(step.degenerate_count, 0);
    assert_eq!(step.predictions, pred);
    let l = step.losses;
    for (k, v) in [
        ("loss.total", l.total),
        ("loss.segmentation", l.segmentation),
        ("loss.background", l.background),
        ("loss.foreground", l.foreground),
        ("loss.classification", l.classification),
    ] {
        let got = Tensor::new(&[v], &dev).unwrap();
        r.check(&format!("loss_and_grads {k}"), &got, &out[k], FWD);
    }
    let names: Vec<&String> = vit.params().names().collect();
    let ref_names: Vec<String> = grads_ref
        .keys()
        .filter_map(|k| k.strip_prefix("grad.").map(str::to_string))
        .collect();
    assert_eq!(
        names.len(),
        ref_names.len(),
        "parameters vs reference gradients"
    );
    for name in &names {
        let want = &grads_ref[&format!("grad.{name}")];
        let got = &step.grads[*name];
        if name.ends_with("attn.qkv.bias") {
            check_qkv_bias(&mut r, name, got, want, cfg.embed_dim);
        } else {
            r.check(&format!("grad.{name}"), got, want, GRAD);
        }
    }

    // The segmentation and classification parts on their own (0.8 / 0.2 not applied).
    for (prefix, lc) in [
        (
            "grad_seg.",
            LossConfig {
                lambda_seg: 1.0,
                lambda_cls: 0.0,
                ..loss_cfg.clone()
            },
        ),
        (
            "grad_cls.",
            LossConfig {
                lambda_seg: 0.0,
                lambda_cls: 1.0,
                ..loss_cfg.clone()
            },
        ),
    ] {
        let keys: Vec<&String> = grads_ref.keys().filter(|k| k.starts_with(prefix)).collect();
        if keys.is_empty() {
            continue;
        }
        let s = relevance::loss_and_grads(vit, x, masks, &targets, &lc).unwrap();
        for k in keys {
            let name = &k[prefix.len()..];
            r.check(k, &s.grads[name], &grads_ref[k], GRAD);
        }
    }

    r.finish();
}

/// `qkv.bias`: query and value slices as gradients (scaled by the whole tensor's max|ref|); the
/// key slice `[D, 2D)` only absolutely (its exact gradient is zero, the stored values are
/// rounding noise).
fn check_qkv_bias(r: &mut Report, name: &str, got: &Tensor, want: &Tensor, d: usize) {
    let (g, w) = (vec(got), vec(want));
    if g.len() != 3 * d || w.len() != 3 * d {
        r.failures.push(format!(
            "grad.{name}: {} / {} elements, expected 3·{d}",
            g.len(),
            w.len()
        ));
        return;
    }
    let scale = match model::compare(&format!("grad.{name}"), &g, &w) {
        Ok(all) => all.max_abs_ref,
        Err(e) => return r.failures.push(e),
    };
    let pick = |v: &[f32]| -> Vec<f32> { [&v[..d], &v[2 * d..]].concat() };
    match model::compare(&format!("grad.{name} [q, v]"), &pick(&g), &pick(&w)) {
        Ok(qv) => r.record(
            &format!("grad.{name} [q, v]"),
            qv.max_abs_diff,
            scale,
            qv.max_abs_diff <= GRAD.0 + GRAD.1 * scale,
        ),
        Err(e) => r.failures.push(e),
    }
    match model::compare(&format!("grad.{name} [k]"), &g[d..2 * d], &w[d..2 * d]) {
        Ok(k) => r.record(
            &format!("grad.{name} [k] (abs)"),
            k.max_abs_diff,
            scale,
            k.max_abs_diff <= 1e-6,
        ),
        Err(e) => r.failures.push(e),
    }
}

/// The baselines recomputed by hand (f64) from the reference attention maps and gradients,
/// upsampled with the reference interpolation matrix.
#[test]
fn explainers_match_hand_computation_from_reference_attention() {
    let dir = model::fixture_dir();
    let dev = model::test_device();
    let m = model::load_fixture_model(&dir, &dev).unwrap();
    let vit = &m.vit;
    let cfg = vit.config().clone();
    let inputs: std::collections::HashMap<String, Tensor> = load(&dir, "inputs.safetensors")
        .into_iter()
        .map(|(k, v)| (k, v.to_device(&dev).unwrap()))
        .collect();
    let out = load(&dir, "outputs.safetensors");
    let x = &inputs["images"];
    let targets = ints(&inputs["target"]);
    let (b, depth, heads, n) = out["attn.0"]
        .dims4()
        .map(|(b, h, n, _)| (b, cfg.depth, h, n))
        .unwrap();
    let f64s = |t: &Tensor| -> Vec<f64> { vec(t).into_iter().map(f64::from).collect() };
    let attn: Vec<Vec<f64>> = (0..depth)
        .map(|l| f64s(&out[&format!("attn.{l}")]))
        .collect();
    let last_grad = f64s(&out[&format!("attn_grad.{}", depth - 1)]);
    let u = f64s(&out["upsample_matrix"]);
    let (g, size) = (cfg.grid(), cfg.img_size);
    let at =
        |a: &[f64], bi: usize, h: usize, i: usize, j: usize| a[((bi * heads + h) * n + i) * n + j];

    // Patch tokens → upsampled → min-max, per image.
    let finish = |tokens: &[f64]| -> Vec<f64> {
        let mut up = vec![0f64; size * size];
        for p in 0..size {
            for q in 0..size {
                for a in 0..g {
                    for c in 0..g {
                        up[p * size + q] += u[p * g + a] * tokens[a * g + c] * u[q * g + c];
                    }
                }
            }
        }
        let lo = up.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = up.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // A constant map is defined as zeros (see `Relevance::degenerate`).
        let range = if hi > lo { hi - lo } else { f64::INFINITY };
        up.iter().map(|v| (v - lo) / range).collect()
    };
    let mut want: Vec<(relevance::Explainer, Vec<f64>)> = Vec::new();
    let (mut raw, mut roll, mut gcam) = (Vec::new(), Vec::new(), Vec::new());
    let l = depth - 1;
    for bi in 0..b {
        // Raw attention: head mean of the class-token row.
        let t: Vec<f64> = (1..n)
            .map(|j| (0..heads).map(|h| at(&attn[l], bi, h, 0, j)).sum::<f64>() / heads as f64)
            .collect();
        raw.extend(finish(&t));
        // Rollout: v ← v · rownorm(0.5·Ā + 0.5·I), from the last block down.
        let mut v = vec![0f64; n];
        v[0] = 1.0;
        for a in attn.iter().rev() {
            let mut mat = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    let mean = (0..heads).map(|h| at(a, bi, h, i, j)).sum::<f64>() / heads as f64;
                    mat[i * n + j] = 0.5 * mean + if i == j { 0.5 } else { 0.0 };
                }
                let s: f64 = mat[i * n..(i + 1) * n].iter().sum();
                mat[i * n..(i + 1) * n].iter_mut().for_each(|x| *x /= s);
            }
            v = (0..n)
                .map(|j| (0..n).map(|i| v[i] * mat[i * n + j]).sum())
                .collect();
        }
        roll.extend(finish(&v[1..]));
        // GradCAM: heads weighted by their mean gradient over the class-token row's patches.
        let w: Vec<f64> = (0..heads)
            .map(|h| (1..n).map(|j| at(&last_grad, bi, h, 0, j)).sum::<f64>() / (n - 1) as f64)
            .collect();
        let t: Vec<f64> = (1..n)
            .map(|j| {
                let c = (0..heads)
                    .map(|h| w[h] * at(&attn[l], bi, h, 0, j))
                    .sum::<f64>();
                (c / heads as f64).max(0.0)
            })
            .collect();
        gcam.extend(finish(&t));
    }
    // The RobustViT map itself: the reference's own value.
    want.push((
        relevance::Explainer::Relevance,
        vec(&out["relevance"]).into_iter().map(f64::from).collect(),
    ));
    want.push((relevance::Explainer::RawAttention, raw));
    want.push((relevance::Explainer::Rollout, roll));
    want.push((relevance::Explainer::GradCam, gcam));
    let mut r = Report::default();
    for (e, w) in want {
        let got = relevance::explain(vit, x, e, Some(&targets)).unwrap();
        assert_eq!(got.map.dims(), &[b, 1, size, size]);
        println!("explainer {e}: constant maps {:?}", got.degenerate);
        let w: Vec<f32> = w.into_iter().map(|v| v as f32).collect();
        let w = Tensor::from_vec(w, (b, 1, size, size), &dev).unwrap();
        r.check(&format!("explainer {e}"), &got.map, &w, FWD);
    }
    r.finish();
}
