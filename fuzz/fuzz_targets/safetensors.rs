//! Weight loading: safetensors header and tensor table, naming detection, the transformers
//! renaming and the shape checks against an architecture.
#![no_main]
use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|bytes: &[u8]| {
    let dev = Device::Cpu;
    let Ok(t) = model::weights::read_safetensors_bytes(bytes, Path::new("fuzz.safetensors"), &dev)
    else {
        return;
    };
    let t = match model::Naming::detect(t.keys()) {
        model::Naming::Timm => t,
        model::Naming::Transformers => {
            match model::weights::transformers_to_timm(t, "fuzz.safetensors") {
                Ok(t) => t,
                Err(_) => return,
            }
        }
    };
    let mut cfg = model::VitConfig::vit(8, 1, 2, 8, 4);
    cfg.num_classes = 3;
    let _ = model::Vit::from_tensors(&cfg, t, &dev, "fuzz.safetensors");
});
