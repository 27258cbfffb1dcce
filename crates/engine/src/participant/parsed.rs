//! Parsed participant URLs, kept. A saga's URLs are parsed at its submit (validation, the
//! participant policy's host check) and before every call, and a deployment has few distinct
//! URLs: parsing (with IDNA processing of host names) was ~5 % of the coordinator's CPU per
//! saga. Parsing is a pure function of the text, so a kept result is always the right one.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// The most URLs kept; past it the cache starts over (URLs that carry per-transaction data
/// would otherwise grow it without bound).
const CAPACITY: usize = 4096;

/// Text → its parse, for one kind of URL (`Err` kept too: a bad URL stays bad). Hashed with
/// foldhash (seeded per process): ~10 lookups per saga, where SipHash cost more than the lookup.
type Cache<T> = Mutex<HashMap<Box<str>, T, foldhash::fast::RandomState>>;

/// HTTP participant URLs.
static CACHE: LazyLock<Cache<Result<Arc<url::Url>, url::ParseError>>> = LazyLock::new(Cache::default);

/// gRPC branch URLs (`host:port/package.Service/Method`): a gRPC saga's were split and their
/// method paths validated ~10 times per saga.
static GRPC_CACHE: LazyLock<Cache<Result<Arc<super::grpc::GrpcUrl>, String>>> = LazyLock::new(Cache::default);

/// `url::Url::parse(u)`, from the cache when `u` was parsed before.
pub(crate) fn parse(u: &str) -> Result<Arc<url::Url>, url::ParseError> {
    kept(&CACHE, u, |u| url::Url::parse(u).map(Arc::new))
}

/// `parse_grpc_url(u)`, from the cache when `u` was parsed before.
pub(crate) fn parse_grpc(u: &str) -> Result<Arc<super::grpc::GrpcUrl>, String> {
    kept(&GRPC_CACHE, u, |u| super::grpc::parse_grpc_url(u).map(Arc::new))
}

/// The kept parse of `u`, or `parse(u)`, kept.
fn kept<T: Clone>(cache: &Cache<T>, u: &str, parse: impl FnOnce(&str) -> T) -> T {
    // A poisoned lock only means another thread panicked while holding it; the map is still
    // a map of correct parses.
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(u) {
        return hit.clone();
    }
    let parsed = parse(u);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= CAPACITY {
        cache.clear();
    }
    cache.insert(u.into(), parsed.clone());
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_parse_is_the_parse() {
        for u in
            ["http://svc:8081/api/TransOut?x=1", "https://bücher.example/a", "not a url", "http://[::1]:9/"]
        {
            let first = parse(u).map(|p| p.as_str().to_owned());
            let again = parse(u).map(|p| p.as_str().to_owned());
            let direct = url::Url::parse(u).map(|p| p.as_str().to_owned());
            assert_eq!(first, direct, "{u}");
            assert_eq!(again, direct, "{u}");
        }
    }

    #[test]
    fn a_kept_grpc_parse_is_the_parse() {
        for u in ["localhost:58081/busi.Busi/TransIn", "h:1/a.B/C", "http://h:1/a.B/C", "h/a.B/C", "h:1/a"] {
            let direct = super::super::grpc::parse_grpc_url(u);
            assert_eq!(parse_grpc(u).map(|p| (*p).clone()), direct, "{u}");
            assert_eq!(parse_grpc(u).map(|p| (*p).clone()), direct, "{u}");
        }
    }

    #[test]
    fn the_cache_stays_bounded() {
        for i in 0..(CAPACITY + 10) {
            parse(&format!("http://h/{i}")).expect("valid");
        }
        assert!(CACHE.lock().expect("lock").len() <= CAPACITY);
    }
}
