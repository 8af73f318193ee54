//! Datasets and preprocessing for RobustViT: ImageNet-S finetuning pairs and the training source
//! built on them, the seven robustness benchmarks in their native layouts, the segmentation
//! benchmark (ImageNet-Segmentation's `.mat` file and mask folders), PIL/torchvision-exact
//! preprocessing, the batch loader (and `load_batch` for one synchronous batch), and the
//! label-space ranking (top-k, class masks).

pub mod check;
pub mod datasets;
pub mod error;
pub mod imagenet_s;
pub mod labels;
pub mod loader;
mod pil_resize;
pub mod preprocess;
pub mod ranking;
pub mod segmentation;
#[cfg(any(test, feature = "test-support"))]
pub mod synthetic;
pub mod train_source;

pub use check::CheckReport;
pub use datasets::{Benchmark, EvalDataset, EvalSample, Protocol};
pub use error::{DataError, Result};
pub use imagenet_s::{ImageNetS, ImageNetSSplit, SegSample, SplitOptions};
pub use loader::{Batch, EvalSource, Loader, LoaderOptions, Progress, SampleSource};
pub use preprocess::{EvalTransform, Interpolation, Normalization, Plane};
pub use train_source::{PairTransform, TrainExample, TrainSource};
