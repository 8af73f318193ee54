//! The model against the PyTorch reference fixtures (logits and every attention map).
//! Tolerance: |a - b| <= 1e-5 + 1e-4 * max|ref| per tensor; the fixtures' own float32 vs
//! float64 deviation is below 2e-6 relative, so 1e-4 leaves room for a different summation order.

use candle_core::{Device, Tensor};
use std::collections::HashMap;

fn load(dir: &std::path::Path, file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join(file), &Device::Cpu).unwrap()
}

/// NaN, infinities and shape mismatches fail (see `model::compare`).
fn assert_close(name: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) {
    let got = got.to_device(&Device::Cpu).unwrap();
    if let Err(e) = model::check_close(name, &got, want, atol, rtol) {
        panic!("{e}");
    }
}

#[test]
fn logits_and_attention_match_reference() {
    let dir = model::fixture_dir();
    let dev = model::test_device();
    let m = model::load_fixture_model(&dir, &dev).unwrap();
    let inputs = load(&dir, "inputs.safetensors");
    let outputs = load(&dir, "outputs.safetensors");
    let x = &inputs["images"].to_device(&dev).unwrap();
    let fwd = m.vit.forward_train(x).unwrap();
    assert_close(
        "logits (train path)",
        &fwd.logits,
        &outputs["logits"],
        1e-5,
        1e-4,
    );
    assert_eq!(fwd.attn.len(), m.vit.config().depth);
    for (l, a) in fwd.attn.iter().enumerate() {
        assert_close(
            &format!("attn.{l}"),
            a,
            &outputs[&format!("attn.{l}")],
            1e-5,
            1e-4,
        );
    }
    let logits = m.vit.forward(x).unwrap();
    assert_close(
        "logits (inference path)",
        &logits,
        &outputs["logits"],
        1e-5,
        1e-4,
    );
    // `forward` runs the last block for the class token only; the full token path gives the
    // same logits, and its features for every token match the training path's.
    let feats = m.vit.forward_features(x, model::Mode::Infer).unwrap();
    let n_tokens = feats.dim(1).unwrap();
    assert!(n_tokens > 1);
    let full = m.vit.forward_head(&feats, model::Mode::Infer).unwrap();
    assert_close("logits (all tokens)", &full, &logits, 1e-6, 1e-5);
    assert_close(
        "logits (all tokens) vs reference",
        &full,
        &outputs["logits"],
        1e-5,
        1e-4,
    );
    let train_feats = m.vit.forward_features(x, model::Mode::Train).unwrap();
    assert_close("features", &feats, &train_feats, 1e-5, 1e-5);
    let pred: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
    let want: Vec<i64> = outputs["pred"].to_vec1().unwrap();
    assert_eq!(pred.iter().map(|&p| p as i64).collect::<Vec<_>>(), want);
}
