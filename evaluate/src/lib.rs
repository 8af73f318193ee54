//! Evaluation of RobustViT models: robustness accuracy, the segmentation test of
//! relevance maps, result tables, the comparison with published numbers and charts.
//!
//! [`run`] does what the `evaluate` binary does (the binary is a thin wrapper, so the
//! experiment driver can call it in-process with an [`EvalArgs`] and print
//! [`EvalArgs::shell_command`]).
//!
//! Datasets are found under `--data-root` by their conventional folder names
//! ([`data::Benchmark::default_dir`]):
//!
//! | dataset | folder under the data root |
//! |---|---|
//! | `imagenet-val` | `imagenet/val` (1000 wnid folders) |
//! | `imagenet-v2` | `imagenetv2-matched-frequency-format-val` (folders `0`..`999`) |
//! | `imagenet-a` | `imagenet-a` (200 wnid folders) |
//! | `imagenet-r` | `imagenet-r` (200 wnid folders) |
//! | `imagenet-sketch` | `sketch` (1000 wnid folders) |
//! | `objectnet` | `objectnet-1.0` (`images/<class>/`, `mappings/`) |
//! | `si-score-location` / `-rotation` / `-size` | `si-score/object_location` / `object_rotation` / `object_size` |
//! | `imagenet-seg` | `imagenet-segmentation/gtsegs_ijcv.mat` (or `gtsegs_ijcv.mat` at the root) |
//!
//! Modules:
//!
//! * [`metrics`] — pixel accuracy, mIoU, mAP of thresholded relevance maps, plus
//!   relevance-mass accuracy and the pointing game;
//! * [`topk`] — top-1 / top-5 accuracy with multi-target images and class masks;
//! * [`results`] — keyed CSV tables merged idempotently and written atomically;
//! * [`explain`] — the `explain` binary: relevance pictures of your own images;
//! * [`cli`] — the command line ([`EvalArgs`]);
//! * [`plan`] — dataset discovery and each protocol's preprocessing;
//!   the segmentation benchmark's readers (`gtsegs_ijcv.mat`, mask folders) are
//!   [`data::segmentation`];
//! * [`predictions`] — per-image top-5 classes and probabilities (`--predictions`);
//! * [`comparison`] — published numbers, the comparison table and the charts' content;
//! * [`evaluation`] — the evaluation loop ([`run`]).

pub mod check;
pub mod cli;
pub mod comparison;
pub mod evaluation;
pub mod explain;
pub mod metrics;
pub mod plan;
pub mod predictions;
pub mod results;
pub mod topk;

pub use cli::{Dtype, EvalArgs, FolderSpec, ModelSpec, ProtocolChoice, SegFolderSpec};
pub use evaluation::{run, Planned, RunSummary};
pub use plan::Skipped;
