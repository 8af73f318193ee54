//! The bf16 inference copy against the PyTorch reference logits (f32 fixtures). bf16 keeps 8
//! significant bits (relative rounding 2^-9 ≈ 2e-3 per value), which accumulates through the
//! blocks: the tolerance is 3 % of the largest logit, and the predicted classes must agree.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

#[test]
fn bf16_copy_matches_the_reference_logits() {
    let dir = model::fixture_dir();
    let dev = Device::Cpu;
    let m = model::load_fixture_model(&dir, &dev).unwrap();
    let load = |f: &str| -> HashMap<String, Tensor> {
        candle_core::safetensors::load(dir.join(f), &dev).unwrap()
    };
    let x = &load("inputs.safetensors")["images"];
    let want = &load("outputs.safetensors")["logits"];
    let bf = m.vit.to_dtype(DType::BF16).unwrap();
    assert_eq!(bf.dtype(), DType::BF16);
    assert_eq!(m.vit.dtype(), DType::F32, "the f32 model is left as it was");
    let got = bf.forward(x).unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    let got = got.to_dtype(DType::F32).unwrap();
    let d = model::check_close("logits (bf16)", &got, want, 0.0, 0.03).unwrap();
    assert!(
        d.max_abs_diff > 0.0,
        "bf16 arithmetic should differ from f32 somewhere"
    );
    let am = |t: &Tensor| -> Vec<u32> { t.argmax(1).unwrap().to_vec1().unwrap() };
    assert_eq!(am(&got), am(want), "top-1 classes");
}
