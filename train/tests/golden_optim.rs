//! One AdamW step from the relevance objective's gradients against the PyTorch reference
//! fixtures (`$ROBUSTVIT_FIXTURES`, else `tests/fixtures/public`): the parameters after it and
//! the optimizer's moments. The gradients themselves are checked in `relevance/tests/golden.rs`.
//!
//! Tolerances, from the fixture README: parameters after AdamW atol 2e-6 where the reference
//! gradient exceeds 1e-5, elsewhere only the size of the step (≤ lr) is checked since the
//! first step amplifies rounding noise there; first moments as gradients (atol 1e-6, rtol
//! 1e-3), second moments atol 1e-12, rtol 2e-3.

#[path = "../../tests/support/golden.rs"]
mod golden_support;

use candle_core::Tensor;
use golden_support::{hyper, ints, load, loss_config, num, vec, Report, GRAD};
use std::path::Path;
use train::optim::{AdamW, AdamWConfig};

/// The optimizer settings of the set (`meta.json`).
fn adamw_config(dir: &Path) -> AdamWConfig {
    let meta = hyper(dir);
    let a = &meta["hyper"]["adamw"];
    let betas = a["betas"].as_array().expect("adamw.betas");
    AdamWConfig {
        lr: num(a, "lr", None),
        beta1: betas[0].as_f64().unwrap(),
        beta2: betas[1].as_f64().unwrap(),
        eps: num(a, "eps", None),
        weight_decay: num(a, "weight_decay", None),
    }
}

#[test]
fn adamw_step_matches_reference() {
    let dir = model::fixture_dir();
    let dev = model::test_device();
    let m = model::load_fixture_model(&dir, &dev).unwrap();
    let vit = &m.vit;
    let inputs: std::collections::HashMap<String, Tensor> = load(&dir, "inputs.safetensors")
        .into_iter()
        .map(|(k, v)| (k, v.to_device(&dev).unwrap()))
        .collect();
    let grads_ref = load(&dir, "grads.safetensors");
    let adamw_ref = load(&dir, "adamw.safetensors");
    let (x, masks) = (&inputs["images"], &inputs["masks"]);
    let targets = ints(&inputs["target"]);
    let mut r = Report::default();

    let before = vit.params().snapshot().unwrap();
    let step = relevance::loss_and_grads(vit, x, masks, &targets, &loss_config(&dir)).unwrap();
    let names: Vec<&String> = vit.params().names().collect();
    // One AdamW step from the gradients above.
    let hyp = adamw_config(&dir);
    let mut opt = AdamW::new(hyp);
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

/// Tight where the reference gradient is clearly non-zero; elsewhere the first AdamW step is
/// `≈ lr · g / (|g| + eps)` of rounding noise, so only its size is bounded.
fn check_param_after(
    r: &mut Report,
    name: &str,
    before: &Tensor,
    got: &Tensor,
    want: &Tensor,
    grad_ref: &Tensor,
    h: &AdamWConfig,
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
