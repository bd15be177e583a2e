//! perfcopy's typed errors. Each variant names what the user has to look at (file, source,
//! column, server, flag); `main` turns them into messages and exit codes.

use std::path::PathBuf;

/// Result with perfcopy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in perfcopy's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid value for {flag}: {message}")]
    Usage { flag: String, message: String },

    #[error("cannot read '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("'{}' is not a readable Parquet file: {message}", path.display())]
    NotParquet { path: PathBuf, message: String },

    #[error("source '{source_label}': required column '{column}' is missing (columns present: {present})")]
    MissingColumn {
        source_label: String,
        column: String,
        present: String,
    },

    #[error("source '{source_label}': column '{column}' has type {found}, expected {expected}")]
    ColumnType {
        source_label: String,
        column: String,
        found: String,
        expected: String,
    },

    #[error("source '{source_label}': column '{column}': {message}")]
    BadValue {
        source_label: String,
        column: String,
        message: String,
    },

    #[error("source '{source_label}': {message}")]
    Source { source_label: String, message: String },

    #[error(
        "{} server name(s) not known to the target: {}; add them to --server-map or pass --register-servers",
        names.len(),
        names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
    )]
    UnknownServers { names: Vec<String> },

    #[error("server map '{}': {message}", path.display())]
    ServerMap { path: PathBuf, message: String },

    #[error("stage '{}': {message}", path.display())]
    Stage { path: PathBuf, message: String },

    #[error("cannot write '{}': {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("Parquet error in '{}': {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("Arrow error ({context}): {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow::error::ArrowError,
    },

    #[error("config '{}': {message}", path.display())]
    Config { path: PathBuf, message: String },

    #[error("{target}: {message}")]
    Target { target: String, message: String },

    #[error("cancelled")]
    Cancelled,

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an Arrow error with what perfcopy was doing.
    pub fn arrow(context: impl Into<String>) -> impl FnOnce(arrow::error::ArrowError) -> Error {
        let context = context.into();
        move |source| Error::Arrow { context, source }
    }

    /// Wraps a Parquet error with the file it came from.
    pub fn parquet(path: impl Into<PathBuf>) -> impl FnOnce(parquet::errors::ParquetError) -> Error {
        let path = path.into();
        move |source| Error::Parquet { path, source }
    }

    /// Wraps an I/O error on a file perfcopy writes.
    pub fn write(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Write { path, source }
    }

    /// Wraps an I/O error on a file perfcopy reads.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// The process exit code `main` uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } | Error::Config { .. } => 2,
            Error::UnknownServers { .. } => 4,
            Error::Cancelled => 130,
            _ => 1,
        }
    }
}
