//! Errors the engine reports to its callers (the API front doors).

/// What went wrong with a request to the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; nothing was stored.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request conflicts with the transaction's state (DTM answers these with FAILURE/409).
    #[error("{0}")]
    Conflict(String),
    /// The transaction is still in progress (DTM's ONGOING/425).
    #[error("{0}")]
    Ongoing(String),
    /// No such transaction.
    #[error("{0}")]
    NotFound(String),
    /// The store is unreachable; the request may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An unexpected store failure.
    #[error("internal error")]
    Internal(#[source] dtx_store::Error),
}

impl From<dtx_store::Error> for Error {
    fn from(e: dtx_store::Error) -> Self {
        match e {
            dtx_store::Error::Unavailable(m) => Error::Unavailable(m),
            dtx_store::Error::NotFound(m) => Error::NotFound(m),
            dtx_store::Error::Conflict(m) | dtx_store::Error::Precondition(m) => Error::Conflict(m),
            other => Error::Internal(other),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
