//! Mapping SQLite failures into the store's error vocabulary (`sqlx::Error` never leaves the crate).

use dtx_core::model::UnknownName;
use dtx_store::Error;

/// Primary SQLite result codes (the low byte of an extended code) that mean "try again later".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

/// Maps a sqlx error: busy/locked/io/pool exhaustion → `Unavailable`, unique violation →
/// `Conflict`, anything else → `Internal`. `what` names the operation for the message.
pub(crate) fn map_sqlx(what: &'static str, err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                return Error::Conflict(format!("{what}: {}", db.message()));
            }
            let primary = db.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff);
            if matches!(
                primary,
                Some(SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN)
            ) {
                return Error::Unavailable(format!("{what}: {err}"));
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => return Error::Unavailable(format!("{what}: {err}")),
        _ => {}
    }
    Error::Internal(anyhow::Error::new(err).context(what))
}

/// A stored row that does not decode into the domain types.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CorruptRow {
    /// A status / type / op column holds an unknown name.
    #[error("{gid}: {source}")]
    Name {
        gid: String,
        #[source]
        source: UnknownName,
    },
    /// The `options` column is not valid JSON for `TransOptions`.
    #[error("{gid}: bad options json")]
    Options {
        gid: String,
        #[source]
        source: serde_json::Error,
    },
    /// An integer column is out of range for its domain type.
    #[error("{gid}: column {column} out of range: {value}")]
    Range { gid: String, column: &'static str, value: i64 },
}

impl From<CorruptRow> for Error {
    fn from(err: CorruptRow) -> Error {
        Error::Internal(anyhow::Error::new(err).context("corrupt row"))
    }
}

/// A copy of `err` for every request of a batch that failed as a whole (`Error` is not `Clone`).
pub(crate) fn replicate(err: &Error) -> Error {
    match err {
        Error::NotFound(s) => Error::NotFound(s.clone()),
        Error::Conflict(s) => Error::Conflict(s.clone()),
        Error::Fenced { gid } => Error::Fenced { gid: gid.clone() },
        Error::Precondition(s) => Error::Precondition(s.clone()),
        Error::Unavailable(s) => Error::Unavailable(s.clone()),
        Error::Internal(e) => Error::Internal(anyhow::anyhow!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_failures_are_retryable() {
        assert!(map_sqlx("x", sqlx::Error::PoolTimedOut).is_retryable());
        let io = std::io::Error::other("disk gone");
        assert!(map_sqlx("x", sqlx::Error::Io(io)).is_retryable());
        assert!(matches!(map_sqlx("x", sqlx::Error::RowNotFound), Error::Internal(_)));
    }

    #[test]
    fn replicate_keeps_the_kind() {
        let e = replicate(&Error::Fenced { gid: "g".into() });
        assert!(matches!(e, Error::Fenced { gid } if gid == "g"));
        let e = replicate(&Error::Internal(anyhow::anyhow!("boom")));
        assert!(e.to_string().contains("internal"));
    }
}
