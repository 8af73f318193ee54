//! The ImageNet-segmentation `.mat` reader through its public entry point (a path), every
//! sample read back.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let p = dir.path().join("gtsegs_ijcv.mat");
    if std::fs::write(&p, bytes).is_err() {
        return;
    }
    if let Ok(g) = data::segmentation::mat::GtSegs::open(&p) {
        for i in 0..g.len().min(64) {
            let _ = g.get(i);
        }
    }
});
