//! Grouped bar charts: drawn by [`figures::chart`] (plotters, embedded font); re-exported
//! here, where the tables they show are made.

pub use figures::chart::*;
