//! Datasets and preprocessing for RobustViT: ImageNet-S finetuning pairs, the seven robustness
//! benchmarks in their native layouts, and PIL/torchvision-exact preprocessing.

pub mod check;
pub mod datasets;
pub mod error;
pub mod imagenet_s;
pub mod labels;
pub mod loader;
mod pil_resize;
pub mod preprocess;
#[cfg(any(test, feature = "test-support"))]
pub mod synthetic;

pub use check::CheckReport;
pub use datasets::{Benchmark, EvalDataset, EvalSample, Protocol};
pub use error::{DataError, Result};
pub use imagenet_s::{ImageNetS, ImageNetSSplit, SegSample, SplitOptions};
pub use loader::{Batch, EvalSource, Loader, LoaderOptions, Progress, SampleSource, SegSource};
pub use preprocess::{EvalTransform, Interpolation, Normalization, Plane};
