//! Mapping PostgreSQL failures into the store's error vocabulary (`sqlx::Error` never leaves the
//! crate).

use dtx_store::Error;

/// SQLSTATE of a unique-constraint violation.
const UNIQUE_VIOLATION: &str = "23505";

/// SQLSTATEs (or classes, when two characters) that mean "the database cannot serve this right
/// now; the same request may work later": connection exceptions (08), insufficient resources
/// (53), operator intervention (57P: shutdown, crash, starting up), transaction rollbacks from
/// contention (40001 serialization, 40P01 deadlock), a lock wait that gave up (55P03), and a
/// read-only server (25006: a standby during a failover).
const RETRYABLE: &[&str] = &["08", "53", "57P01", "57P02", "57P03", "40001", "40P01", "55P03", "25006"];

/// True for a SQLSTATE in [`RETRYABLE`].
fn retryable_code(code: &str) -> bool {
    RETRYABLE.iter().any(|c| if c.len() == 2 { code.starts_with(c) } else { code == *c })
}

/// Maps a sqlx error: the database unreachable, shutting down, overloaded or contended →
/// `Unavailable`; a unique violation → `Conflict`; anything else → `Internal`. `what` names the
/// operation for the message.
pub(crate) fn map_sqlx(what: &'static str, err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) => {
            if db.code().as_deref() == Some(UNIQUE_VIOLATION) {
                return Error::Conflict(format!("{what}: {}", db.message()));
            }
            if db.code().is_some_and(|c| retryable_code(&c)) {
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
    Error::Unavailable(format!("PostgreSQL is unreachable or not accepting work ({what}: {err})"))
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
        assert!(e.to_string().contains("PostgreSQL"), "{e}");
        assert!(matches!(map_sqlx("x", sqlx::Error::RowNotFound), Error::Internal(_)));
    }

    #[test]
    fn sqlstates_are_classified() {
        for code in ["08006", "08001", "57P01", "57P03", "53300", "40P01", "40001", "25006"] {
            assert!(retryable_code(code), "{code}");
        }
        for code in ["23505", "42601", "22003", "57014"] {
            assert!(!retryable_code(code), "{code}");
        }
    }
}
