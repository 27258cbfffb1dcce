//! JSON-RPC participants (spec 4.3): a transaction with protocol `json-rpc` calls a branch URL
//! that names a `method` (query parameter) as a JSON-RPC 2.0 request, POSTed to the URL, with
//! the payload (a JSON object) plus `gid`, `trans_type`, `branch_id`, `op` as `params`.

use dtx_core::Outcome;
use serde_json::{Value, json};

use crate::participant::http::HttpClient;
use crate::participant::{CallRequest, http_request};

/// DTM's JSON-RPC error code for FAILURE.
const FAILURE: i64 = -32901;
/// DTM's JSON-RPC error code for ONGOING.
const ONGOING: i64 = -32902;

/// The request body; `Err` when the payload is not a JSON object (or empty).
pub(crate) fn request_body(req: &CallRequest, id: &str) -> Result<Value, String> {
    let url = url::Url::parse(&req.url).map_err(|e| format!("bad participant url {}: {e}", req.url))?;
    let method =
        url.query_pairs().find(|(k, _)| k == "method").map(|(_, v)| v.into_owned()).unwrap_or_default();
    let mut params = if req.payload.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<Value>(&req.payload) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => serde_json::Map::new(),
            _ => return Err("a JSON-RPC branch's payload must be a JSON object".to_owned()),
        }
    };
    for (k, v) in [
        ("gid", req.gid.as_str()),
        ("trans_type", req.trans_type.as_str()),
        ("branch_id", req.branch_id.as_str()),
        ("op", req.op_text()),
    ] {
        params.insert(k.to_owned(), json!(v));
    }
    Ok(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
}

/// Reads a JSON-RPC answer: the HTTP rules first, then `error` (null = success; -32901 =
/// FAILURE, -32902 = ONGOING, as DTM intends; anything else is an error, retried).
pub(crate) fn outcome_of(status: u16, body: &str) -> Outcome {
    let http = Outcome::from_http(status, body);
    if http != Outcome::Success {
        return http;
    }
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Outcome::Error(format!(
            "JSON-RPC answer is not JSON: {}",
            body.chars().take(200).collect::<String>()
        ));
    };
    match v.get("error") {
        None | Some(Value::Null) => Outcome::Success,
        Some(e) => {
            let message = e.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
            match e.get("code").and_then(Value::as_i64) {
                Some(FAILURE) => Outcome::Failure(message),
                Some(ONGOING) => Outcome::Ongoing,
                code => Outcome::Error(format!("JSON-RPC error {code:?}: {message}")),
            }
        }
    }
}

/// POSTs the JSON-RPC request to `uri` (the branch URL as parsed for the call).
pub(crate) async fn call(http: &HttpClient, uri: &str, req: &CallRequest, exported: Option<&str>) -> Outcome {
    let id = format!("{:032x}", rand::random::<u128>());
    let body = match request_body(req, &id) {
        Ok(b) => b,
        Err(e) => return Outcome::Error(e),
    };
    let request =
        match http_request(::http::Method::POST, uri.to_owned(), req, exported, body.to_string().into()) {
            Ok(r) => r,
            Err(e) => return Outcome::Error(e),
        };
    match http.send(request, req.timeout).await {
        Ok(answer) => outcome_of(answer.status, &answer.body),
        Err(e) => Outcome::Error(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bytes::Bytes;
    use dtx_core::{Op, TransType};

    use super::*;

    fn req(payload: &str) -> CallRequest {
        CallRequest {
            url: "http://svc/api/json-rpc?method=TransIn".into(),
            gid: "g".into(),
            trans_type: TransType::Saga,
            branch_id: "01".into(),
            op: Op::Action,
            op_name: None,
            payload: Bytes::from(payload.to_owned()),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(1),
            json_rpc: true,
        }
    }

    #[test]
    fn the_request_carries_the_method_and_the_branch_in_params() {
        let b = request_body(&req(r#"{"amount":30}"#), "id1").unwrap();
        assert_eq!(
            b,
            json!({"jsonrpc": "2.0", "id": "id1", "method": "TransIn",
                   "params": {"amount": 30, "gid": "g", "trans_type": "saga", "branch_id": "01", "op": "action"}})
        );
        assert!(request_body(&req("[1]"), "x").is_err(), "the payload must be an object");
        assert_eq!(request_body(&req(""), "x").unwrap()["params"]["gid"], "g");
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert_eq!(
            outcome_of(200, r#"{"jsonrpc":"2.0","id":"1","error":null,"result":null}"#),
            Outcome::Success
        );
        assert_eq!(
            outcome_of(200, r#"{"error":{"code":-32901,"message":"no money"}}"#),
            Outcome::Failure("no money".into())
        );
        assert_eq!(outcome_of(200, r#"{"error":{"code":-32902,"message":"later"}}"#), Outcome::Ongoing);
        assert!(matches!(outcome_of(200, r#"{"error":{"code":-32603,"message":"x"}}"#), Outcome::Error(_)));
        assert!(matches!(outcome_of(200, "not json"), Outcome::Error(_)));
        assert!(matches!(outcome_of(500, "{}"), Outcome::Error(_)));
        assert_eq!(outcome_of(425, ""), Outcome::Ongoing);
    }
}
