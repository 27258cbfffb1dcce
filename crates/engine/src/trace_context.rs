//! W3C trace context (`traceparent` / `tracestate`) from a submit to every participant call.
//!
//! A `traceparent` received with a submit or prepare (HTTP header or gRPC metadata) is stored
//! with the transaction inside its `branch_headers` (the `options` JSON column: no schema
//! change, and it survives restarts like every other option). Every participant call then
//! carries a **child** context: the same trace id and flags, a fresh span id per call, so that
//! each attempt (retries, and calls after a restart or a takeover) is its own span of the
//! submitter's trace. `tracestate` is passed on unchanged. An invalid `traceparent` is ignored,
//! as the W3C recommendation says.
//!
//! With span export on (the server's `--otlp-endpoint`), a [`SpanExport`] links the engine's
//! spans to that context: a round's span becomes a child of the stored `traceparent`, and each
//! participant call gets a span of its own whose id is the one sent, so a participant's spans
//! hang below an exported span. Without it (the default) no span is linked and no call span is
//! made.

use std::collections::BTreeMap;

use crate::TransRequest;

/// Links tracing spans to W3C contexts for an exporter (implemented by the server over
/// OpenTelemetry; the engine itself depends on no exporter).
pub trait SpanExport: Send + Sync + 'static {
    /// Makes `span` (a round, not yet entered) a child of the remote context `traceparent`.
    fn set_parent(&self, span: &tracing::Span, traceparent: &str, tracestate: Option<&str>);

    /// The `traceparent` naming `span` as exported (its trace id and its own span id), if it is.
    fn traceparent_of(&self, span: &tracing::Span) -> Option<String>;
}

/// The stored `traceparent` and `tracestate` of a transaction (`branch_headers`), if any.
pub fn stored(headers: &BTreeMap<String, String>) -> Option<(&str, Option<&str>)> {
    let find =
        |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let parent = find(TRACEPARENT).filter(|p| is_valid(p))?;
    Some((parent, find(TRACESTATE)))
}

/// The header (and gRPC metadata key) carrying the parent.
pub const TRACEPARENT: &str = "traceparent";
/// The vendor state header.
pub const TRACESTATE: &str = "tracestate";

/// Whether `v` is a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero.
pub fn is_valid(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && nonzero(parts[1])
        && hex(parts[2], 16)
        && nonzero(parts[2])
        && hex(parts[3], 2)
}

/// Stores a received context with the transaction (replacing a `traceparent` given in
/// `branch_headers`). Nothing happens for an absent or invalid `traceparent`.
pub fn attach(req: &mut TransRequest, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(parent) = traceparent.map(str::trim).filter(|p| is_valid(p)) else {
        return;
    };
    let headers = &mut req.options.branch_headers;
    headers.retain(|k, _| !k.eq_ignore_ascii_case(TRACEPARENT) && !k.eq_ignore_ascii_case(TRACESTATE));
    headers.insert(TRACEPARENT.to_owned(), parent.to_owned());
    if let Some(state) = tracestate.map(str::trim).filter(|s| !s.is_empty()) {
        headers.insert(TRACESTATE.to_owned(), state.to_owned());
    }
}

/// The value to send for header `name` whose stored value is `value`: a child of a stored
/// `traceparent` (fresh span id), anything else unchanged.
pub fn outgoing<'a>(name: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    outgoing_as(name, value, None)
}

/// [`outgoing`], naming the exported span of the call (`exported`, a `traceparent`) instead of a
/// random one when it belongs to the stored trace.
pub fn outgoing_as<'a>(name: &str, value: &'a str, exported: Option<&str>) -> std::borrow::Cow<'a, str> {
    if !name.eq_ignore_ascii_case(TRACEPARENT) || !is_valid(value) {
        return std::borrow::Cow::Borrowed(value);
    }
    match exported.filter(|e| is_valid(e) && e[3..35] == value[3..35]) {
        Some(e) => std::borrow::Cow::Owned(e.to_owned()),
        None => std::borrow::Cow::Owned(child(value)),
    }
}

/// A child of a valid `traceparent`: same version, trace id and flags, a new random span id.
fn child(parent: &str) -> String {
    let trace_id = &parent[3..35];
    let flags = &parent[53..55];
    // Never all zero (invalid): the low bit is forced on.
    let span = rand::random::<u64>() | 1;
    format!("00-{trace_id}-{span:016x}-{flags}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn validity() {
        assert!(is_valid(P));
        assert!(!is_valid("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
        assert!(!is_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
        assert!(!is_valid("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!is_valid("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
        assert!(!is_valid("garbage"));
    }

    #[test]
    fn children_keep_the_trace_and_flags_with_fresh_span_ids() {
        let a = outgoing("Traceparent", P).into_owned();
        let b = outgoing("traceparent", P).into_owned();
        for c in [&a, &b] {
            assert!(is_valid(c), "{c}");
            assert_eq!(&c[3..35], &P[3..35]);
            assert_eq!(&c[53..], "01");
            assert_ne!(&c[36..52], &P[36..52]);
        }
        assert_ne!(a, b);
        assert_eq!(outgoing("x-other", P), P);
        assert_eq!(outgoing("traceparent", "bad"), "bad");
    }

    #[test]
    fn an_exported_span_of_the_same_trace_is_sent_as_is() {
        let exported = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
        assert_eq!(outgoing_as("traceparent", P, Some(exported)), exported);
        // Another trace (or garbage) never replaces the stored one's child.
        let other = "00-0af7651916cd43dd8448eb211c80319c-1111111111111111-01";
        let sent = outgoing_as("traceparent", P, Some(other)).into_owned();
        assert_eq!(&sent[3..35], &P[3..35]);
        assert_ne!(&sent[36..52], &P[36..52]);
        assert_eq!(outgoing_as("x-other", P, Some(exported)), P);
    }

    #[test]
    fn stored_context_is_found_in_any_case() {
        let mut h = BTreeMap::new();
        assert_eq!(stored(&h), None);
        h.insert("Traceparent".to_owned(), P.to_owned());
        assert_eq!(stored(&h), Some((P, None)));
        h.insert("tracestate".to_owned(), "a=b".to_owned());
        assert_eq!(stored(&h), Some((P, Some("a=b"))));
        h.insert("Traceparent".to_owned(), "bad".to_owned());
        assert_eq!(stored(&h), None);
    }
}
