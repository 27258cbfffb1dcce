//! The global transaction id rule, shared by every front door (HTTP, gRPC) through the engine.

/// The longest gid accepted, in bytes (DTM's column is `varchar(128)`).
pub const MAX_GID_LEN: usize = 128;

/// Why a gid is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GidError {
    /// Empty.
    #[error("gid is missing")]
    Missing,
    /// Longer than [`MAX_GID_LEN`] bytes.
    #[error("gid is longer than {MAX_GID_LEN} bytes ({0} bytes)")]
    TooLong(usize),
    /// Contains white space or a control character (NUL included): such gids cannot be typed,
    /// logged or passed in a query string safely, and PostgreSQL refuses NUL in text.
    #[error("gid contains the character {0:?}")]
    BadChar(char),
}

/// Checks a gid: not empty, at most [`MAX_GID_LEN`] bytes, no white space or control character.
pub fn check_gid(gid: &str) -> Result<(), GidError> {
    if gid.is_empty() {
        return Err(GidError::Missing);
    }
    if gid.len() > MAX_GID_LEN {
        return Err(GidError::TooLong(gid.len()));
    }
    // Every request checks its gid: ASCII ones (nearly all) byte by byte, where a space is the
    // only whitespace that is not also a control character.
    if gid.bytes().all(|b| b.is_ascii() && b != b' ' && !b.is_ascii_control()) {
        return Ok(());
    }
    match gid.chars().find(|c| c.is_whitespace() || c.is_control()) {
        Some(c) => Err(GidError::BadChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_are_checked() {
        assert_eq!(check_gid("order-1_a.b:c"), Ok(()));
        assert_eq!(check_gid(&"x".repeat(MAX_GID_LEN)), Ok(()));
        assert_eq!(check_gid(""), Err(GidError::Missing));
        assert_eq!(check_gid(&"x".repeat(MAX_GID_LEN + 1)), Err(GidError::TooLong(MAX_GID_LEN + 1)));
        // Bytes, not characters: 43 three-byte characters are 129 bytes.
        assert_eq!(check_gid(&"€".repeat(43)), Err(GidError::TooLong(129)));
        assert_eq!(check_gid("a b"), Err(GidError::BadChar(' ')));
        assert_eq!(check_gid("a\0b"), Err(GidError::BadChar('\0')));
        assert_eq!(check_gid("a\tb"), Err(GidError::BadChar('\t')));
        assert_eq!(check_gid("a\u{85}b"), Err(GidError::BadChar('\u{85}')));
        assert_eq!(check_gid("ünï-€"), Ok(()));
        assert_eq!(check_gid("ü\u{2003}x"), Err(GidError::BadChar('\u{2003}')));
    }

    #[test]
    fn the_ascii_shortcut_is_the_character_rule() {
        for b in 0u8..=127 {
            let c = char::from(b);
            let want = if c.is_whitespace() || c.is_control() { Err(GidError::BadChar(c)) } else { Ok(()) };
            assert_eq!(check_gid(&format!("a{c}b")), want, "byte {b:#04x}");
        }
    }
}
