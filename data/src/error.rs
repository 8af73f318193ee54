use std::path::PathBuf;

/// Every error names the file or folder at fault and says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty (0 bytes): re-download or delete it")]
    EmptyFile { path: PathBuf },
    #[error("{path} is truncated (the JPEG has no end-of-image marker): re-download or delete it")]
    Truncated { path: PathBuf },
    #[error("{path} is not a readable image ({reason}): re-download or delete it")]
    Decode { path: PathBuf, reason: String },
    #[error("mask {path}: {reason}")]
    BadMask { path: PathBuf, reason: String },
    #[error("{dataset} folder {root}: {problem}; expected {expected}")]
    Layout {
        dataset: String,
        root: PathBuf,
        problem: String,
        expected: String,
    },
    #[error("split file {path}: {reason}")]
    SplitFile { path: PathBuf, reason: String },
    #[error("preparing {path} panicked ({cause}); the run stops rather than go on without it")]
    Panicked { path: PathBuf, cause: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
