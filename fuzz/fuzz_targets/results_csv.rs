//! The result-table merge: parsing an existing `robustness.csv` / `segmentation.csv` and
//! merging new rows into it.
#![no_main]
use evaluate::results::{self, RobustnessRow, SegmentationRow};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|bytes: &[u8]| {
    let path = Path::new("robustness.csv");
    if let Ok(rows) = results::parse_rows::<RobustnessRow>(bytes, path) {
        let new = rows.first().cloned().into_iter().collect::<Vec<_>>();
        let _ = results::merged(rows, &new, path);
    }
    if let Ok(rows) = results::parse_rows::<SegmentationRow>(bytes, path) {
        let _ = results::merged(rows, &[], path);
    }
});
