//! ImageNet-S split files (`split.json`, `--split-file`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = data::imagenet_s::ImageNetSSplit::parse(text, Path::new("split.json"));
    }
});
