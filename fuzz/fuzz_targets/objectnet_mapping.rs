//! ObjectNet `folder_to_objectnet_label.json`, checked against the embedded mapping.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = data::datasets::parse_objectnet_mapping(
            text,
            Path::new("folder_to_objectnet_label.json"),
        );
    }
});
