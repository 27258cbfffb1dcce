//! Mapping SQLite failures into the store's error vocabulary (`sqlx::Error` and `rusqlite::Error`
//! never leave the crate).

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

/// Maps a rusqlite error (the writer's driver) exactly like [`map_sqlx`]: busy/locked/io/full/
/// cantopen → `Unavailable`, unique or primary-key violation → `Conflict`, anything else →
/// `Internal`.
pub(crate) fn map_rusqlite(what: &'static str, err: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(code, message) = &err {
        let extended = code.extended_code;
        if extended == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || extended == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        {
            let message = message.clone().unwrap_or_else(|| code.to_string());
            return Error::Conflict(format!("{what}: {message}"));
        }
        if matches!(
            extended & 0xff,
            SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
        ) {
            return Error::Unavailable(format!("{what}: {err}"));
        }
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

    fn failure(extended_code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(extended_code), None)
    }

    #[test]
    fn rusqlite_failures_map_like_sqlx() {
        assert!(map_rusqlite("x", failure(rusqlite::ffi::SQLITE_BUSY)).is_retryable());
        assert!(map_rusqlite("x", failure(rusqlite::ffi::SQLITE_IOERR_FSYNC)).is_retryable());
        assert!(map_rusqlite("x", failure(rusqlite::ffi::SQLITE_FULL)).is_retryable());
        let unique = map_rusqlite("x", failure(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE));
        assert!(matches!(unique, Error::Conflict(_)));
        let pk = map_rusqlite("x", failure(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY));
        assert!(matches!(pk, Error::Conflict(_)));
        let not_null = map_rusqlite("x", failure(rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL));
        assert!(matches!(not_null, Error::Internal(_)));
        assert!(matches!(map_rusqlite("x", rusqlite::Error::QueryReturnedNoRows), Error::Internal(_)));
    }
}
