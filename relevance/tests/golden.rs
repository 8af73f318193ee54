//! The relevance map, the loss, every parameter gradient and one AdamW step against the
//! PyTorch reference fixtures (`$ROBUSTVIT_FIXTURES`, else `tests/fixtures/public`).
//!
//! Nothing about the set is assumed: the model comes from its `config.json`, the batch size,
//! depth and sizes from the tensors, the loss weights and optimizer settings from `meta.json`.
//!
//! Tolerances (per tensor, `|a − b| ≤ atol + rtol · max|ref|`), from the fixture README:
//! forward quantities atol 1e-5, rtol 1e-4; gradients atol 1e-6, rtol 1e-3; parameters after
//! AdamW atol 2e-6 where the reference gradient exceeds 1e-5, elsewhere only the size of the
//! step (≤ lr) is checked since the first step amplifies rounding noise there. The key-bias
//! slice `qkv.bias[D:2D]` has a mathematically zero gradient and is compared absolutely.

use candle_core::{Device, Tensor, Var};
use relevance::{LossConfig, MaskMode};
use std::collections::HashMap;
use std::path::Path;

const FWD: (f64, f64) = (1e-5, 1e-4);
const GRAD: (f64, f64) = (1e-6, 1e-3);

fn load(dir: &Path, file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join(file), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn ints(t: &Tensor) -> Vec<u32> {
    t.to_dtype(candle_core::DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| u32::try_from(v).unwrap())
        .collect()
}

/// Collects the measured deviations; fails at the end with every offender listed.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    /// Shapes must agree (the fixture stores some tensors with a different but equal-sized
    /// layout, so only the element count is required); NaN/Inf fail through `model::compare`.
    fn check(&mut self, name: &str, got: &Tensor, want: &Tensor, tol: (f64, f64)) {
        if got.elem_count() != want.elem_count() {
            self.failures.push(format!(
                "{name}: shape {:?} vs reference {:?}",
                got.dims(),
                want.dims()
            ));
            return;
        }
        self.check_values(name, &vec(got), &vec(want), tol);
    }

    fn check_values(&mut self, name: &str, got: &[f32], want: &[f32], (atol, rtol): (f64, f64)) {
        match model::compare(name, got, want) {
            Ok(d) => self.record(name, d.max_abs_diff, d.max_abs_ref, d.within(atol, rtol)),
            Err(e) => self.failures.push(e),
        }
    }

    fn record(&mut self, name: &str, diff: f64, scale: f64, ok: bool) {
        let rel = if scale > 0.0 { diff / scale } else { 0.0 };
        let line =
            format!("{name:<48} max abs diff {diff:.3e}  rel {rel:.3e}  (max|ref| {scale:.3e})");
        if !ok {
            self.failures.push(line.clone());
        }
        self.lines.push(line);
    }

    fn finish(self) {
        for l in &self.lines {
            println!("{l}");
        }
        assert!(
            self.failures.is_empty(),
            "outside tolerance:\n{}",
            self.failures.join("\n")
        );
    }
}

struct Hyper {
    loss: LossConfig,
    adamw: relevance::AdamWConfig,
}

fn hyper(dir: &Path) -> Hyper {
    let text = std::fs::read_to_string(dir.join("meta.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    let h = &meta["hyper"];
    let num = |v: &serde_json::Value, k: &str, default: Option<f64>| -> f64 {
        v.get(k)
            .and_then(|x| x.as_f64())
            .or(default)
            .unwrap_or_else(|| panic!("meta.json hyper lacks `{k}`"))
    };
    let a = &h["adamw"];
    let betas = a["betas"].as_array().expect("adamw.betas");
    Hyper {
        loss: LossConfig {
            lambda_seg: num(h, "lambda_seg", None),
            lambda_cls: num(h, "lambda_acc", None),
            lambda_bg: num(h, "lambda_background", None),
            lambda_fg: num(h, "lambda_foreground", None),
            // Only DeiT runs scale the logits; sets without the key use none.
            temperature: h
                .get("temperature")
                .or_else(|| meta["config"].get("temperature"))
                .and_then(|x| x.as_f64())
                .unwrap_or(1.0),
            mask_mode: MaskMode::Paper,
        },
        adamw: relevance::AdamWConfig {
            lr: num(a, "lr", None),
            beta1: betas[0].as_f64().unwrap(),
            beta2: betas[1].as_f64().unwrap(),
            eps: num(a, "eps", None),
            weight_decay: num(a, "weight_decay", None),
        },
    }
}

#[test]
fn relevance_loss_gradients_and_adamw_match_reference() {
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
    let adamw_ref = load(&dir, "adamw.safetensors");
    let hy = hyper(&dir);
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
        hy.loss
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
        relevance::loss_terms(parts.relevance(), masks, &parts.logits, &pred, &hy.loss).unwrap();
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
    let cls = relevance::loss_terms(&rel0, masks, z.as_tensor(), &pred, &hy.loss).unwrap();
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
        let t = relevance::loss_terms(rel, masks, &parts.logits.detach(), &pred, &hy.loss).unwrap();
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
    let t = relevance::loss_terms(&n.map, masks, &parts.logits.detach(), &pred, &hy.loss).unwrap();
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
    let before = vit.params().snapshot().unwrap();
    let step = relevance::train_step(vit, x, masks, &targets, &hy.loss).unwrap();
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
        r.check(&format!("train_step {k}"), &got, &out[k], FWD);
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
                ..hy.loss.clone()
            },
        ),
        (
            "grad_cls.",
            LossConfig {
                lambda_seg: 0.0,
                lambda_cls: 1.0,
                ..hy.loss.clone()
            },
        ),
    ] {
        let keys: Vec<&String> = grads_ref.keys().filter(|k| k.starts_with(prefix)).collect();
        if keys.is_empty() {
            continue;
        }
        let s = relevance::train_step(vit, x, masks, &targets, &lc).unwrap();
        for k in keys {
            let name = &k[prefix.len()..];
            r.check(k, &s.grads[name], &grads_ref[k], GRAD);
        }
    }

    // One AdamW step from the gradients above.
    let hyp = hy.adamw;
    let mut opt = relevance::AdamW::new(hyp);
    opt.step(vit.params(), &step.grads).unwrap();
    let after = vit.params().snapshot().unwrap();
    for name in &names {
        check_param_after(
            &mut r,
            name,
            &before[*name],
            &after[*name],
            &adamw_ref[&format!("param_after.{name}")],
            &grads_ref[&format!("grad.{name}")],
            &hyp,
        );
    }
    let state = opt.state_tensors().unwrap();
    for (k, want) in adamw_ref.iter().filter(|(k, _)| k.starts_with("exp_avg")) {
        let tol = if k.starts_with("exp_avg_sq.") {
            (1e-12, 2e-3)
        } else {
            GRAD
        };
        r.check(k, &state[k], want, tol);
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

/// Tight where the reference gradient is clearly non-zero; elsewhere the first AdamW step is
/// `≈ lr · g / (|g| + eps)` of rounding noise, so only its size is bounded.
fn check_param_after(
    r: &mut Report,
    name: &str,
    before: &Tensor,
    got: &Tensor,
    want: &Tensor,
    grad_ref: &Tensor,
    h: &relevance::AdamWConfig,
) {
    let (p, g, w, gr) = (vec(before), vec(got), vec(want), vec(grad_ref));
    let label = format!("param_after.{name}");
    let scale = match model::compare(&label, &g, &w) {
        Ok(all) => all.max_abs_ref,
        Err(e) => return r.failures.push(e),
    };
    // (The reference gradient itself is checked, NaN included, as `grad.{name}`.)
    if p.len() != g.len() || gr.len() != g.len() {
        return r.failures.push(format!(
            "{label}: {} parameters before, {} after, {} reference gradients",
            p.len(),
            g.len(),
            gr.len()
        ));
    }
    let decay = (1.0 - h.lr * h.weight_decay) as f32;
    let (mut tg, mut tw, mut lg, mut lw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..p.len() {
        if gr[i].abs() > 1e-5 {
            tg.push(g[i]);
            tw.push(w[i]);
        } else {
            lg.push(g[i]);
            lw.push(p[i] * decay);
        }
    }
    match model::compare(&label, &tg, &tw) {
        Ok(t) => r.record(&label, t.max_abs_diff, scale, t.max_abs_diff <= 2e-6),
        Err(e) => r.failures.push(e),
    }
    let loose = format!("param_after.{name} (|g|<=1e-5: step size)");
    match model::compare(&loose, &lg, &lw) {
        Ok(l) => r.record(&loose, l.max_abs_diff, h.lr, l.max_abs_diff <= h.lr + 2e-6),
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
