//! Model `config.json` (timm and transformers shapes): an accepted config must validate.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(p) = model::config::parse_config_json(text, Path::new("config.json")) {
        p.vit.validate().unwrap();
        if let Some(pc) = &p.pretrained {
            pc.validate().unwrap();
        }
    }
});
