//! Typed errors of the test server.

use std::fmt;

/// An error of the server's host-side API or of one connection (never a panic).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Socket or file I/O failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A client sent bytes that do not follow MS-TDS; the connection is closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A TLS handshake or TLS record failed (or the certificate could not be made).
    #[error("tls error: {0}")]
    Tls(String),
    /// A host-side call (seeding, reading back) named something that does not exist or did not fit.
    #[error("{0}")]
    Api(String),
    /// An Arrow conversion failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A Parquet file could not be read.
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A statement failed the way SQL Server would fail it.
    #[error("{0}")]
    Sql(#[from] SqlError),
}

/// A SQL Server style error: what the server sends as an ERROR token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SqlError {
    /// SQL Server message number (e.g. 2627 unique violation, 1205 deadlock).
    pub number: i32,
    /// Severity class (16 for user errors, 13 for deadlocks, 14 for login failures).
    pub class: u8,
    /// State byte.
    pub state: u8,
    /// Message text.
    pub message: String,
}

impl SqlError {
    /// A class-16 error with state 1.
    pub fn new(number: i32, message: impl Into<String>) -> Self {
        SqlError { number, class: 16, state: 1, message: message.into() }
    }

    /// Msg 102-style error for statements outside the supported subset; quotes the statement.
    pub fn unsupported(stmt: &str, why: &str) -> Self {
        SqlError::new(
            102,
            format!("tds-test-server does not support this statement ({why}): {}", stmt.trim()),
        )
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Msg {}, Level {}, State {}: {}", self.number, self.class, self.state, self.message)
    }
}

/// Result alias for host-side API calls.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;
