//! Finetuning runs: the paper's relevance objective or plain cross-entropy, resumable, with
//! everything a researcher needs left in the run folder.

pub mod batches;
pub mod cli;
pub mod config;
pub mod optim;
pub mod run_dir;
pub mod strips;
pub mod trainer;

pub use cli::{execute, TrainArgs};
pub use config::{Objective, Schedule, TrainConfig, Transform};
