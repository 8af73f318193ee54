//! ImageNet-S mask PNG decoding and class-id extraction.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(m) = data::imagenet_s::decode_mask_bytes(bytes, Path::new("mask.png")) {
        assert!(m.class_ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            m.binary.data.len(),
            m.binary.width as usize * m.binary.height as usize
        );
    }
});
