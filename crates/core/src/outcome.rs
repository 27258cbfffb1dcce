//! The result of one participant call, as DTM's result protocol defines it.

/// What a participant answered.
///
/// HTTP: 200 = `Success`, 409 = `Failure`, 425 = `Ongoing`, anything else (or a transport error)
/// = `Error`. A body containing `ONGOING` / `FAILURE` also counts (DTM's legacy rule), ONGOING
/// first. gRPC has the equivalent status codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The branch did its work.
    Success,
    /// A definite business failure: the branch will never succeed (roll back).
    Failure(String),
    /// Not done yet: ask again after the fixed retry interval.
    Ongoing,
    /// Unknown (network error, timeout, 5xx...): retry with backoff.
    Error(String),
}

impl Outcome {
    /// The outcome's kind, as metrics label it and spans record it.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure(_) => "failure",
            Outcome::Ongoing => "ongoing",
            Outcome::Error(_) => "error",
        }
    }

    /// Reads an HTTP answer: the status code and the response body.
    pub fn from_http(status: u16, body: &str) -> Outcome {
        if status == 425 || body.contains("ONGOING") {
            Outcome::Ongoing
        } else if status == 409 || body.contains("FAILURE") {
            Outcome::Failure(describe_body(status, body))
        } else if status != 200 {
            Outcome::Error(describe_body(status, body))
        } else {
            Outcome::Success
        }
    }

    /// The text recorded as the branch's last error, if this outcome is not a success.
    pub fn error_text(&self) -> Option<&str> {
        match self {
            Outcome::Success => None,
            Outcome::Ongoing => Some("ONGOING"),
            Outcome::Failure(m) | Outcome::Error(m) => Some(m),
        }
    }
}

/// Participants' bodies can be large; the recorded text is bounded.
const MAX_BODY_TEXT: usize = 512;

/// The most bytes of error text stored for a branch (`last_error`).
pub const MAX_STORED_TEXT: usize = 1024;

fn describe_body(status: u16, body: &str) -> String {
    format!("status {status}: {}", bounded(body.trim(), MAX_BODY_TEXT))
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Error text as stored and shown by `query`: at most [`MAX_STORED_TEXT`] bytes, NUL and other
/// control characters replaced by spaces (a participant's error page is not trusted text).
pub fn stored_text(text: &str) -> String {
    bounded(text, MAX_STORED_TEXT).chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_codes_map_per_protocol() {
        assert_eq!(Outcome::from_http(200, ""), Outcome::Success);
        assert_eq!(Outcome::from_http(200, r#"{"dtm_result":"SUCCESS"}"#), Outcome::Success);
        assert_eq!(Outcome::from_http(425, ""), Outcome::Ongoing);
        assert!(matches!(Outcome::from_http(409, "no"), Outcome::Failure(_)));
        assert!(matches!(Outcome::from_http(500, "boom"), Outcome::Error(_)));
        assert!(matches!(Outcome::from_http(201, ""), Outcome::Error(_)));
        assert!(matches!(Outcome::from_http(204, ""), Outcome::Error(_)));
    }

    #[test]
    fn legacy_body_substrings_win_ongoing_first() {
        assert_eq!(Outcome::from_http(200, r#"{"dtm_result":"ONGOING"}"#), Outcome::Ongoing);
        assert!(matches!(Outcome::from_http(200, r#"{"dtm_result":"FAILURE"}"#), Outcome::Failure(_)));
        assert!(matches!(Outcome::from_http(500, "FAILURE here"), Outcome::Failure(_)));
        assert_eq!(Outcome::from_http(409, "ONGOING"), Outcome::Ongoing);
    }

    #[test]
    fn stored_text_has_no_control_characters_and_is_bounded() {
        assert_eq!(stored_text("a\0b\r\n\x1b[31mc"), "a b   [31mc");
        assert_eq!(stored_text(&"é".repeat(2000)).len(), MAX_STORED_TEXT);
    }

    #[test]
    fn recorded_text_is_bounded_on_a_char_boundary() {
        let body = "é".repeat(600);
        let Outcome::Error(text) = Outcome::from_http(500, &body) else {
            panic!("expected an error");
        };
        assert!(text.len() <= MAX_BODY_TEXT + 16);
    }
}
