//! Bearer tokens on both front doors (issue 12).
//!
//! - `--admin-token` guards the operator calls (`forceStop`, `resetNextCronTime`,
//!   `resetCronTime`, `subscribe`, `unsubscribe`, `DELETE topic`), the transaction list (`all`,
//!   `scanKV`) and `/api/admin/*`; gRPC `Subscribe`, `Unsubscribe`, `DeleteTopic`.
//! - `--api-token` guards everything else an SDK calls (`newGid`, `prepare`, `submit`, `abort`,
//!   `registerBranch` and its aliases, `query`, `queryKV`; the gRPC equivalents). The admin token
//!   is accepted wherever the API token is.
//! - With only an API token, the operator calls need that token: a configured token never
//!   leaves the more powerful calls open.
//! - Open: `/api/ping`, `/api/dtmsvr/version`, `/api/ready` (orchestrators probe it without
//!   credentials), `/api/metrics` (counts and latencies, no payloads, URLs or secrets), the
//!   admin UI's static files (`/admin`, no data), gRPC health and reflection.
//!
//! HTTP reads `Authorization: Bearer <token>`, gRPC the `authorization` metadata (same form).
//! The comparison is constant-time; a refused call gets 401 / `Unauthenticated` before any
//! handler runs, so nothing changes.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use serde_json::json;
use subtle::ConstantTimeEq;
use tonic::codegen::http;
use tower::{Layer, Service};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing.
    Open,
    /// The API token (or the admin token), when one is set.
    Api,
    /// The admin token (or, when only an API token is set, that one).
    Admin,
}

/// The configured tokens (empty: open, as in DTM).
#[derive(Clone, Default)]
pub struct Tokens {
    admin: Option<Arc<str>>,
    api: Option<Arc<str>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("admin", &self.admin.as_ref().map(|_| "***"))
            .field("api", &self.api.as_ref().map(|_| "***"))
            .finish()
    }
}

fn same(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

impl Tokens {
    /// Tokens from the configuration's values.
    pub fn new(admin: Option<&str>, api: Option<&str>) -> Tokens {
        Tokens { admin: admin.map(Arc::from), api: api.map(Arc::from) }
    }

    /// Whether no token is configured (every call is open).
    pub fn is_open(&self) -> bool {
        self.admin.is_none() && self.api.is_none()
    }

    /// Whether the SDK calls need a token.
    pub fn guards_api(&self) -> bool {
        self.api.is_some()
    }

    /// Whether a call needing `access` may go ahead with the bearer token `given` (empty: none).
    pub fn allows(&self, access: Access, given: &str) -> bool {
        let admin_ok = self.admin.as_deref().is_some_and(|t| same(given, t));
        let api_ok = self.api.as_deref().is_some_and(|t| same(given, t));
        match access {
            Access::Open => true,
            Access::Api => self.api.is_none() || api_ok || admin_ok,
            Access::Admin => match (&self.admin, &self.api) {
                (Some(_), _) => admin_ok,
                (None, Some(_)) => api_ok,
                (None, None) => true,
            },
        }
    }

    /// Which token a call lacks (`"admin"` or `"API"`), `None` when it may go ahead. `access`
    /// (what the call needs) is only asked when a token is configured; `req`'s `authorization`
    /// header (HTTP) or metadata (gRPC) carries the bearer token.
    fn missing<B>(&self, req: &http::Request<B>, access: impl FnOnce() -> Access) -> Option<&'static str> {
        if self.is_open() {
            return None;
        }
        let access = access();
        let given = bearer(req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
        if self.allows(access, given) {
            return None;
        }
        Some(if access == Access::Admin { "admin" } else { "API" })
    }
}

/// The token of an `Authorization: Bearer <token>` value (empty when absent or of another form).
fn bearer(value: Option<&str>) -> &str {
    value.and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).unwrap_or_default()
}

/// What an HTTP call needs. Unknown paths need the API token (they answer 404 once let in).
pub fn http_access(method: &Method, path: &str) -> Access {
    const ADMIN: &[&str] =
        &["all", "forceStop", "resetNextCronTime", "resetCronTime", "subscribe", "unsubscribe", "scanKV"];
    if path.starts_with("/api/admin/") {
        return Access::Admin;
    }
    if matches!(path, "/api/ping" | "/api/ready" | "/api/metrics" | "/api/dtmsvr/version")
        || path == "/admin"
        || path.starts_with("/admin/")
    {
        return Access::Open;
    }
    match path.strip_prefix("/api/dtmsvr/") {
        Some(rest) if ADMIN.contains(&rest) => Access::Admin,
        Some(rest) if method == Method::DELETE && rest.starts_with("topic/") => Access::Admin,
        _ => Access::Api,
    }
}

/// What a gRPC call (by its `/package.Service/Method` path) needs.
pub fn grpc_access(path: &str) -> Access {
    match path.strip_prefix("/dtmgimp.Dtm/") {
        Some("Subscribe" | "Unsubscribe" | "DeleteTopic") => Access::Admin,
        Some(_) => Access::Api,
        None if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") => Access::Open,
        None => Access::Api,
    }
}

/// Wraps the HTTP routes: refuses a call without the token it needs (401, nothing done).
#[derive(Clone, Debug)]
pub struct HttpAuthLayer(pub Tokens);

impl<S> Layer<S> for HttpAuthLayer {
    type Service = HttpAuth<S>;

    fn layer(&self, inner: S) -> HttpAuth<S> {
        HttpAuth { inner, tokens: self.0.clone() }
    }
}

/// See [`HttpAuthLayer`]. A plain service rather than `axum::middleware::from_fn`, whose
/// per-request boxing of the inner stack showed in the profile of every API call.
#[derive(Clone, Debug)]
pub struct HttpAuth<S> {
    inner: S,
    tokens: Tokens,
}

impl<S, B> Service<http::Request<B>> for HttpAuth<S>
where
    S: Service<http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, std::future::Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(which) = self.tokens.missing(&req, || http_access(req.method(), req.uri().path())) else {
            return Either::Left(self.inner.call(req));
        };
        let body = json!({
            "dtm_result": "FAILURE",
            "message": format!("{which} token required: Authorization: Bearer <token>"),
        });
        let refused = (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], Json(body));
        Either::Right(std::future::ready(Ok(refused.into_response())))
    }
}

/// Wraps the gRPC routes: [`grpc_access`] decides, the `authorization` metadata answers.
#[derive(Clone, Debug)]
pub struct GrpcAuthLayer(pub Tokens);

impl<S> Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth { inner, tokens: self.0.clone() }
    }
}

/// See [`GrpcAuthLayer`].
#[derive(Clone, Debug)]
pub struct GrpcAuth<S> {
    inner: S,
    tokens: Tokens,
}

impl<S, B, R> Service<http::Request<B>> for GrpcAuth<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, std::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(which) = self.tokens.missing(&req, || grpc_access(req.uri().path())) else {
            return Either::Left(self.inner.call(req));
        };
        let status = tonic::Status::unauthenticated(format!(
            "{which} token required: authorization metadata 'Bearer <token>'"
        ));
        Either::Right(std::future::ready(Ok(status.into_http())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_what_the_issue_says() {
        for path in ["/api/dtmsvr/all", "/api/dtmsvr/forceStop", "/api/dtmsvr/scanKV", "/api/admin/counts"] {
            assert_eq!(http_access(&Method::GET, path), Access::Admin, "{path}");
        }
        for path in ["/api/dtmsvr/subscribe", "/api/dtmsvr/unsubscribe", "/api/dtmsvr/resetCronTime"] {
            assert_eq!(http_access(&Method::GET, path), Access::Admin, "{path}");
        }
        assert_eq!(http_access(&Method::DELETE, "/api/dtmsvr/topic/t"), Access::Admin);
        for path in [
            "/api/dtmsvr/submit",
            "/api/dtmsvr/query",
            "/api/dtmsvr/queryKV",
            "/api/dtmsvr/newGid",
            "/api/dtmsvr/registerTccBranch",
            "/api/dtmsvr/allx",
            "/nowhere",
        ] {
            assert_eq!(http_access(&Method::GET, path), Access::Api, "{path}");
        }
        for path in ["/api/ping", "/api/ready", "/api/metrics", "/admin", "/admin/assets/app.js"] {
            assert_eq!(http_access(&Method::GET, path), Access::Open, "{path}");
        }
        assert_eq!(grpc_access("/dtmgimp.Dtm/Submit"), Access::Api);
        assert_eq!(grpc_access("/dtmgimp.Dtm/Subscribe"), Access::Admin);
        assert_eq!(grpc_access("/dtmgimp.Dtm/DeleteTopic"), Access::Admin);
        assert_eq!(grpc_access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(grpc_access("/other.Svc/M"), Access::Api);
    }

    #[test]
    fn the_admin_token_opens_everything_the_api_token_opens() {
        let both = Tokens::new(Some("admin-secret"), Some("api-secret"));
        assert!(both.allows(Access::Api, "api-secret") && both.allows(Access::Api, "admin-secret"));
        assert!(both.allows(Access::Admin, "admin-secret") && !both.allows(Access::Admin, "api-secret"));
        assert!(!both.allows(Access::Api, "") && !both.allows(Access::Api, "api-secreT"));
        assert!(both.allows(Access::Open, ""));
        let admin_only = Tokens::new(Some("admin-secret"), None);
        assert!(admin_only.allows(Access::Api, "") && !admin_only.allows(Access::Admin, ""));
        let api_only = Tokens::new(None, Some("api-secret"));
        assert!(!api_only.allows(Access::Admin, "") && api_only.allows(Access::Admin, "api-secret"));
        assert!(Tokens::default().allows(Access::Admin, ""));
        assert_eq!(bearer(Some("Bearer abc ")), "abc");
        assert_eq!(bearer(Some("Basic abc")), "");
    }
}
