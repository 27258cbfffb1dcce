//! Typed errors, mapped from answers exactly as the coordinator maps participants' answers.

/// Everything that can go wrong in this crate.
///
/// The first four variants are the result protocol seen from the caller:
///
/// | answer | HTTP | gRPC |
/// |---|---|---|
/// | [`Error::Failure`] | 409, or a body containing `FAILURE` | `Aborted` (message not `ONGOING`) |
/// | [`Error::Ongoing`] | 425, or a body containing `ONGOING` (checked first) | `FailedPrecondition`, or `Aborted` with message `ONGOING` |
/// | [`Error::Transport`] | no answer: refused, reset, timed out | `Unavailable` (tonic's code for a failed connection) |
/// | [`Error::Protocol`] | any other status than 200, or an unreadable body | any other code |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A definite failure (FAILURE): a saga submitted with `wait_result` that rolled back, a
    /// try that refused, a check-back that says the local transaction rolled back.
    #[error("FAILURE: {0}")]
    Failure(String),
    /// Not finished yet (ONGOING): ask again later.
    #[error("ONGOING: {0}")]
    Ongoing(String),
    /// No answer arrived (connection refused or reset, timeout).
    #[error("transport error: {0}")]
    Transport(String),
    /// An answer outside the result protocol (a 400 or 500, another gRPC code, a body that is
    /// not what the API returns).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The caller's input cannot be used (a missing gid, a bad URL, a payload that does not fit
    /// the transport, more than 99 TCC branches...). Nothing was sent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The message barrier row already exists: the check-back already decided that this
    /// message's local transaction rolled back (or it already committed). The local
    /// transaction was rolled back.
    #[error("DUPLICATED: the message's local transaction was already decided")]
    Duplicated,
    /// A database error (barrier).
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An error of the caller's own code (a business error returned from a closure).
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps any error of the caller's code as [`Error::Other`].
    pub fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::Other(e.into())
    }

    /// A business failure with this reason: [`Error::Failure`]. A participant answers it with
    /// 409 / `Aborted`; a TCC scope returning it aborts with the reason.
    pub fn failure(reason: impl Into<String>) -> Error {
        Error::Failure(reason.into())
    }

    /// `true` for [`Error::Failure`].
    pub fn is_failure(&self) -> bool {
        matches!(self, Error::Failure(_))
    }

    /// `true` for [`Error::Ongoing`].
    pub fn is_ongoing(&self) -> bool {
        matches!(self, Error::Ongoing(_))
    }

    /// Reads an HTTP answer (status and body) the way the coordinator reads a participant's:
    /// 425 or `ONGOING` in the body first, then 409 or `FAILURE`, then any status but 200 is a
    /// protocol error. `Ok(())` for a plain 200.
    pub fn check_http(status: u16, body: &str) -> Result<(), Error> {
        if status == 425 || body.contains("ONGOING") {
            Err(Error::Ongoing(message_of(status, body)))
        } else if status == 409 || body.contains("FAILURE") {
            Err(Error::Failure(message_of(status, body)))
        } else if status != 200 {
            Err(Error::Protocol(format!("HTTP {status}: {}", message_of(status, body))))
        } else {
            Ok(())
        }
    }
}

/// The envelope's `message` when the body is DTM's envelope, else the trimmed body.
fn message_of(status: u16, body: &str) -> String {
    let text = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().chars().take(512).collect());
    if text.is_empty() { format!("HTTP {status}") } else { text }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::Transport(e.to_string())
    }
}

#[cfg(feature = "grpc")]
impl From<tonic::Status> for Error {
    /// The coordinator's and participants' gRPC mapping: `Aborted` = FAILURE (unless the
    /// message is exactly `ONGOING`, DTM's convention before 1.10), `FailedPrecondition` =
    /// ONGOING, `Unavailable` = transport, anything else = protocol.
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        match s.code() {
            Code::Aborted if s.message() == "ONGOING" => Error::Ongoing(s.message().to_owned()),
            Code::Aborted => Error::Failure(s.message().to_owned()),
            Code::FailedPrecondition => Error::Ongoing(s.message().to_owned()),
            Code::Unavailable => Error::Transport(s.message().to_owned()),
            code => Error::Protocol(format!("gRPC {code:?}: {}", s.message())),
        }
    }
}

#[cfg(feature = "grpc")]
impl From<Error> for tonic::Status {
    /// What a tonic participant answers: FAILURE = `Aborted`, ONGOING = `FailedPrecondition`,
    /// anything else `Internal` (the coordinator retries it).
    fn from(e: Error) -> Self {
        match e {
            Error::Failure(m) => tonic::Status::aborted(m),
            Error::Ongoing(m) => tonic::Status::failed_precondition(m),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_map_as_the_coordinator_maps_them() {
        assert!(Error::check_http(200, r#"{"dtm_result":"SUCCESS"}"#).is_ok());
        assert!(Error::check_http(409, "{}").is_err_and(|e| e.is_failure()));
        assert!(Error::check_http(425, "").is_err_and(|e| e.is_ongoing()));
        assert!(Error::check_http(200, r#"{"dtm_result":"FAILURE"}"#).is_err_and(|e| e.is_failure()));
        assert!(Error::check_http(409, "ONGOING").is_err_and(|e| e.is_ongoing()));
        assert!(matches!(Error::check_http(500, "boom"), Err(Error::Protocol(_))));
        assert!(matches!(Error::check_http(204, ""), Err(Error::Protocol(_))));
        let Err(Error::Failure(m)) =
            Error::check_http(409, r#"{"dtm_result":"FAILURE","message":"no funds"}"#)
        else {
            panic!("expected a failure");
        };
        assert_eq!(m, "no funds");
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn grpc_codes_map_both_ways() {
        assert!(Error::from(tonic::Status::aborted("x")).is_failure());
        assert!(Error::from(tonic::Status::aborted("ONGOING")).is_ongoing());
        assert!(Error::from(tonic::Status::failed_precondition("x")).is_ongoing());
        assert!(matches!(Error::from(tonic::Status::unavailable("x")), Error::Transport(_)));
        assert!(matches!(Error::from(tonic::Status::internal("x")), Error::Protocol(_)));
        assert_eq!(tonic::Status::from(Error::failure("x")).code(), tonic::Code::Aborted);
        assert_eq!(tonic::Status::from(Error::Ongoing("x".into())).code(), tonic::Code::FailedPrecondition);
        assert_eq!(tonic::Status::from(Error::Protocol("x".into())).code(), tonic::Code::Internal);
    }
}
