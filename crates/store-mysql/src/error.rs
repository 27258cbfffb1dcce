//! Mapping MySQL / MariaDB failures into the store's error vocabulary (`sqlx::Error` never leaves
//! the crate).

use dtx_store::Error;
use sqlx::mysql::MySqlDatabaseError;

/// Server error numbers that mean "the database cannot serve this right now; the same request
/// may work later": too many connections (1040), shutting down (1053), a lock wait that gave up
/// (1205), a deadlock (1213), a read-only server (1290, 1836: a replica during a failover), a
/// killed connection (1927), a client dropped for inactivity (4031).
const RETRYABLE: &[u16] = &[1040, 1053, 1205, 1213, 1290, 1836, 1927, 4031];

/// Maps a sqlx error: the database unreachable, shutting down, overloaded or contended →
/// `Unavailable`; a duplicate key → `Conflict`; anything else → `Internal`. `what` names the
/// operation for the message.
pub(crate) fn map_sqlx(what: &'static str, err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                return Error::Conflict(format!("{what}: {}", db.message()));
            }
            if db.try_downcast_ref::<MySqlDatabaseError>().is_some_and(|e| RETRYABLE.contains(&e.number())) {
                return unavailable(what, &err);
            }
        }
        // A connection that broke mid-exchange shows up as I/O or protocol errors.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => return unavailable(what, &err),
        _ => {}
    }
    Error::Internal(anyhow::Error::new(err).context(what))
}

/// The `Unavailable` a client sees (in a 503): says plainly that the database is the problem.
fn unavailable(what: &'static str, err: &sqlx::Error) -> Error {
    Error::Unavailable(format!("MySQL is unreachable or not accepting work ({what}: {err})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_pool_failures_are_retryable() {
        assert!(map_sqlx("x", sqlx::Error::PoolTimedOut).is_retryable());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = map_sqlx("create", sqlx::Error::Io(io));
        assert!(e.is_retryable());
        assert!(e.to_string().contains("MySQL"), "{e}");
        assert!(matches!(map_sqlx("x", sqlx::Error::RowNotFound), Error::Internal(_)));
    }
}
