//! Workflow rules (spec 6.6). The client runs the workflow and records each step's result
//! through `registerBranch`; dtx stores them, returns them when the workflow is prepared again
//! (so a replay skips recorded steps), finishes it on the client's `submit`, and while it stays
//! `prepared` calls the client's callback so a crashed client resumes it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::model::{BranchStatus, GlobalStatus, Op};

/// The branch id of the callback (as DTM sends it).
pub const CALLBACK_BRANCH: &str = "00";

/// A workflow's `custom_data`: `{"name": <workflow name>, "data": <base64 of its input>}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Custom {
    /// The workflow's name, sent as `op` to the callback.
    pub name: String,
    /// The workflow's input, sent as the callback's body.
    pub data: Vec<u8>,
}

/// Bad workflow input on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadWorkflow(pub String);

#[derive(serde::Deserialize)]
struct RawCustom {
    #[serde(default)]
    name: String,
    #[serde(default)]
    data: Option<String>,
}

impl Custom {
    /// Parses `custom_data` (empty = no name, no input).
    pub fn parse(text: &str) -> Result<Custom, BadWorkflow> {
        if text.trim().is_empty() {
            return Ok(Custom::default());
        }
        let raw: RawCustom = serde_json::from_str(text).map_err(|e| {
            BadWorkflow(format!("custom_data of a workflow is not {{\"name\",\"data\"}}: {e}"))
        })?;
        let data = match raw.data {
            Some(b64) => STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| BadWorkflow(format!("custom_data.data is not base64: {e}")))?,
            None => Vec::new(),
        };
        Ok(Custom { name: raw.name, data })
    }
}

/// The gRPC callback's request message, `workflow.WorkflowData { bytes Data = 1; }`, encoded
/// (a single length-delimited field; nothing at all for empty input, as protobuf encodes it).
pub fn grpc_callback_payload(data: &[u8]) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(data.len() + 11);
    out.push(0x0a); // field 1, wire type 2 (length-delimited)
    let mut len = data.len() as u64;
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(data);
    out
}

/// The op of a recorded step: the SDK records `action` (a step), `commit` / `rollback` (its
/// phase-two callbacks).
pub fn step_op(text: &str) -> Result<Op, BadWorkflow> {
    match text.parse::<Op>() {
        Ok(op @ (Op::Action | Op::Commit | Op::Rollback)) => Ok(op),
        _ => Err(BadWorkflow(format!("workflow op '{text}' (expected action, commit or rollback)"))),
    }
}

/// The status of a recorded step: `succeed` or `failed` (the SDK records only finished steps).
pub fn step_status(text: &str) -> Result<BranchStatus, BadWorkflow> {
    match text.parse::<BranchStatus>() {
        Ok(s @ (BranchStatus::Succeed | BranchStatus::Failed)) => Ok(s),
        _ => Err(BadWorkflow(format!("workflow branch status '{text}' (expected succeed or failed)"))),
    }
}

/// The final status a workflow `submit` asks for (`req_extra.status`).
pub fn finish_status(text: &str) -> Result<GlobalStatus, BadWorkflow> {
    match text.parse::<GlobalStatus>() {
        Ok(s @ (GlobalStatus::Succeed | GlobalStatus::Failed)) => Ok(s),
        _ => Err(BadWorkflow(format!(
            "submit of a workflow needs req_extra.status succeed or failed, not '{text}'"
        ))),
    }
}

/// What a `submit` of a workflow does in a status: only a `prepared` workflow finishes; a
/// finished one answers success again when the same end is asked (a client retry), and
/// refuses otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFinish {
    /// `prepared`: write the final status.
    Finish,
    /// Already in the requested final status: nothing to do.
    AlreadyDone,
    /// Anything else: refuse (409).
    Refuse,
}

/// Decides a workflow `submit` asking for `to` in `status`.
pub fn on_finish(status: GlobalStatus, to: GlobalStatus) -> OnFinish {
    match status {
        GlobalStatus::Prepared => OnFinish::Finish,
        s if s == to => OnFinish::AlreadyDone,
        _ => OnFinish::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_data_parses_as_the_sdk_writes_it() {
        let c = Custom::parse(r#"{"name":"wf-transfer","data":"eyJhIjoxfQ=="}"#).unwrap();
        assert_eq!(c.name, "wf-transfer");
        assert_eq!(c.data, br#"{"a":1}"#);
        assert_eq!(Custom::parse("").unwrap(), Custom::default());
        assert_eq!(Custom::parse(r#"{"name":"x","data":null}"#).unwrap().data, b"");
        assert!(Custom::parse("[1]").is_err());
        assert!(Custom::parse(r#"{"name":"x","data":"%%"}"#).is_err());
    }

    #[test]
    fn grpc_payload_is_a_workflow_data_message() {
        assert_eq!(grpc_callback_payload(b""), b"");
        assert_eq!(grpc_callback_payload(b"ab"), [0x0a, 2, b'a', b'b']);
        let long = vec![7u8; 300];
        let enc = grpc_callback_payload(&long);
        // 300 = 0b10_0101100 → varint 0xac 0x02.
        assert_eq!(&enc[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(&enc[3..], &long[..]);
    }

    #[test]
    fn recorded_steps_take_only_finished_statuses_and_sdk_ops() {
        assert_eq!(step_op("action"), Ok(Op::Action));
        assert_eq!(step_op("commit"), Ok(Op::Commit));
        assert_eq!(step_op("rollback"), Ok(Op::Rollback));
        assert!(step_op("confirm").is_err());
        assert!(step_op("").is_err());
        assert_eq!(step_status("succeed"), Ok(BranchStatus::Succeed));
        assert_eq!(step_status("failed"), Ok(BranchStatus::Failed));
        assert!(step_status("prepared").is_err());
    }

    #[test]
    fn finishing() {
        use GlobalStatus::*;
        assert_eq!(finish_status("succeed"), Ok(Succeed));
        assert_eq!(finish_status("failed"), Ok(Failed));
        assert!(finish_status("submitted").is_err());
        assert!(finish_status("").is_err());
        assert_eq!(on_finish(Prepared, Succeed), OnFinish::Finish);
        assert_eq!(on_finish(Prepared, Failed), OnFinish::Finish);
        assert_eq!(on_finish(Succeed, Succeed), OnFinish::AlreadyDone);
        assert_eq!(on_finish(Failed, Failed), OnFinish::AlreadyDone);
        assert_eq!(on_finish(Succeed, Failed), OnFinish::Refuse);
        assert_eq!(on_finish(Failed, Succeed), OnFinish::Refuse);
    }
}
