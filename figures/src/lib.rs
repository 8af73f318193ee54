//! Every picture of the project, without candle: colour maps, relevance overlays, titled
//! panel sheets with a colour bar (the training strips, the `explain` sheets, contact sheets)
//! and bar charts drawn with `plotters`.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (`fonts/`, licence beside it), so
//! pictures look the same on every machine and the build needs no system font library.
//! Maps come in as row-major `H·W` values in [0, 1]; turning tensors into pixels is the
//! caller's job (see `relevance::render`).
//!
//! * [`colormap`]: viridis (default) and jet;
//! * [`overlay`]: heatmap over an image, mask pictures, the untitled four-panel strip, PNG
//!   writing;
//! * [`sheet`]: panels with titles in rows, a colour bar and a caption;
//! * [`chart`]: grouped bar charts with error bars and a chance line.

pub mod chart;
pub mod colormap;
pub mod overlay;
pub mod sheet;
pub mod text;

pub use colormap::ColorMap;
pub use overlay::{heatmap_overlay, mask_image, save_png, strip, STRIP_GAP};
pub use sheet::{training_strip, ColorBar, Panel, Rect, Row, Sheet, SheetLayout, StripTitles};

use std::path::PathBuf;

/// Everything that can go wrong while drawing or saving a picture.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("picture {path}: {msg}")]
    Save { path: PathBuf, msg: String },
}

pub type Result<T, E = FigureError> = std::result::Result<T, E>;
