//! The `api` label of an HTTP request, named from its path: the metrics layer wraps the whole
//! router (ADR 28), so it sees a request before axum matched a route.

/// The DTM API's names (`/api/dtmsvr/<name>`) other than `topic/{topic}`.
const DTM_APIS: [&str; 18] = [
    "version",
    "newGid",
    "submit",
    "prepare",
    "abort",
    "prepareWorkflow",
    "registerBranch",
    "registerTccBranch",
    "registerXaBranch",
    "forceStop",
    "resetNextCronTime",
    "resetCronTime",
    "subscribe",
    "unsubscribe",
    "scanKV",
    "queryKV",
    "query",
    "all",
];

/// The `api` label of an HTTP request: the last fixed segment of the route its path names
/// (`/api/dtmsvr/topic/{topic}` → `topic`), or `unknown`
/// for a path no route serves, so that no request creates a label value. The metrics layer
/// wraps the whole router (ADR 28), so it sees the path before axum matched a route.
pub fn http_api(path: &str) -> &'static str {
    if let Some(name) = path.strip_prefix("/api/dtmsvr/") {
        if name.strip_prefix("topic/").is_some_and(|t| !t.is_empty() && !t.contains('/')) {
            return "topic";
        }
        return DTM_APIS.iter().find(|&&api| api == name).copied().unwrap_or("unknown");
    }
    match path {
        "/api/ping" => "ping",
        "/api/json-rpc" => "json-rpc",
        "/api/metrics" => "metrics",
        "/api/ready" => "ready",
        "/admin" | "/admin/" => "admin",
        "/admin/assets/app.js" => "app.js",
        "/admin/assets/index.css" => "index.css",
        "/api/admin/counts" => "counts",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The label a route's pattern names: its last fixed segment.
    fn route_api(path: &str) -> &str {
        let mut segments = path.trim_end_matches('/').rsplit('/');
        let last = segments.next().unwrap_or_default();
        if last.starts_with('{') { segments.next().unwrap_or(last) } else { last }
    }

    /// Every route the server has (`api`, `app` and `admin` routers), as written there: its
    /// path is labelled with the route's last fixed segment; other paths are `unknown`.
    #[test]
    fn every_route_has_its_label_and_other_paths_none() {
        assert_eq!(route_api("/api/dtmsvr/submit"), "submit");
        assert_eq!(route_api("/api/dtmsvr/topic/{topic}"), "topic");
        assert_eq!(route_api("/api/ping"), "ping");
        let routes = [
            "/api/ping",
            "/api/dtmsvr/version",
            "/api/dtmsvr/newGid",
            "/api/dtmsvr/submit",
            "/api/dtmsvr/prepare",
            "/api/dtmsvr/abort",
            "/api/dtmsvr/prepareWorkflow",
            "/api/dtmsvr/registerBranch",
            "/api/dtmsvr/registerTccBranch",
            "/api/dtmsvr/registerXaBranch",
            "/api/dtmsvr/forceStop",
            "/api/dtmsvr/resetNextCronTime",
            "/api/dtmsvr/resetCronTime",
            "/api/dtmsvr/subscribe",
            "/api/dtmsvr/unsubscribe",
            "/api/dtmsvr/topic/{topic}",
            "/api/dtmsvr/scanKV",
            "/api/dtmsvr/queryKV",
            "/api/dtmsvr/query",
            "/api/dtmsvr/all",
            "/api/json-rpc",
            "/api/metrics",
            "/api/ready",
            "/admin",
            "/admin/",
            "/admin/assets/app.js",
            "/admin/assets/index.css",
            "/api/admin/counts",
        ];
        for route in routes {
            let path = route.replace("{topic}", "orders");
            assert_eq!(http_api(&path), route_api(route), "{route}");
        }
        for path in [
            "/",
            "/api",
            "/api/dtmsvr/",
            "/api/dtmsvr/submitx",
            "/api/dtmsvr/submit/x",
            "/api/dtmsvr/topic/",
            "/api/dtmsvr/topic/a/b",
            "/api/dtmsvr/Submit",
            "/admin/x",
            "/api/dtmsvr/bench-1234",
        ] {
            assert_eq!(http_api(path), "unknown", "{path}");
        }
    }
}
