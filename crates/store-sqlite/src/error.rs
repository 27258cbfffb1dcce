//! Mapping SQLite failures into the store's error vocabulary (`sqlx::Error` never leaves the crate).

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
}
