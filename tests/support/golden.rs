//! What the golden tests against the PyTorch reference fixtures share: reading a set, the
//! tolerances (from the fixture README), the loss weights of `meta.json`, and a report that
//! lists every offender before it fails.
#![allow(dead_code)] // each test binary uses a different subset

use candle_core::{Device, Tensor};
use relevance::{LossConfig, MaskMode};
use std::collections::HashMap;
use std::path::Path;

/// Forward quantities: atol, rtol.
pub const FWD: (f64, f64) = (1e-5, 1e-4);
/// Gradients: atol, rtol.
pub const GRAD: (f64, f64) = (1e-6, 1e-3);

pub fn load(dir: &Path, file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join(file), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

pub fn vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub fn ints(t: &Tensor) -> Vec<u32> {
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
pub struct Report {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
}

impl Report {
    /// Shapes must agree (the fixture stores some tensors with a different but equal-sized
    /// layout, so only the element count is required); NaN/Inf fail through `model::compare`.
    pub fn check(&mut self, name: &str, got: &Tensor, want: &Tensor, tol: (f64, f64)) {
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

    pub fn check_values(
        &mut self,
        name: &str,
        got: &[f32],
        want: &[f32],
        (atol, rtol): (f64, f64),
    ) {
        match model::compare(name, got, want) {
            Ok(d) => self.record(name, d.max_abs_diff, d.max_abs_ref, d.within(atol, rtol)),
            Err(e) => self.failures.push(e),
        }
    }

    pub fn record(&mut self, name: &str, diff: f64, scale: f64, ok: bool) {
        let rel = if scale > 0.0 { diff / scale } else { 0.0 };
        let line =
            format!("{name:<48} max abs diff {diff:.3e}  rel {rel:.3e}  (max|ref| {scale:.3e})");
        if !ok {
            self.failures.push(line.clone());
        }
        self.lines.push(line);
    }

    pub fn finish(self) {
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

/// `meta.json`'s `hyper` section, and the number `k` in `v` (or `default`).
pub fn hyper(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("meta.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn num(v: &serde_json::Value, k: &str, default: Option<f64>) -> f64 {
    v.get(k)
        .and_then(|x| x.as_f64())
        .or(default)
        .unwrap_or_else(|| panic!("meta.json hyper lacks `{k}`"))
}

/// The loss weights of the set (`meta.json`).
pub fn loss_config(dir: &Path) -> LossConfig {
    let meta = hyper(dir);
    let h = &meta["hyper"];
    LossConfig {
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
    }
}
