//! OTLP span export (`--otlp-endpoint`): the real `dtx` binary exports its round and
//! participant-call spans to a collector (an OTLP/gRPC `TraceService` on loopback, inside the
//! test) as spans of the submitter's trace: the first round is a child of the submitted
//! `traceparent`, every call span a child of its round, and each participant receives the id of
//! its call's exported span.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtx_tests::{DtxProcess, Participant, Reply, Saga, free_port, sqlite_url};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// One exported span, as the collector received it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    service_names: Arc<Mutex<Vec<String>>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in request.into_inner().resource_spans {
            if let Some(resource) = &rs.resource {
                for kv in &resource.attributes {
                    if kv.key == "service.name" {
                        self.service_names.lock().expect("collector lock").push(text(kv.value.as_ref()));
                    }
                }
            }
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let attributes =
                        s.attributes.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect();
                    self.spans.lock().expect("collector lock").push(Span {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    async fn spawn() -> (Collector, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        (collector, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("collector lock").clone()
    }

    /// Waits (up to 20 s: the exporter batches every 5 s) until `done` holds for the spans.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(tokio::time::Instant::now() < deadline, "collector never got {what}; spans: {spans:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_and_participant_calls_are_exported_in_the_submitters_trace() {
    let (collector, endpoint) = Collector::spawn().await;
    let p = Participant::spawn().await;
    // The second step fails once: a scheduled round retries it.
    p.script("/TransIn", [Reply::error()]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dtx.log");
    let flags = ["--otlp-endpoint", endpoint.as_str(), "--retry-interval", "1s", "--poll-interval", "200ms"];
    let mut dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), &flags, &log).await;

    let saga = Saga::new("otlp-traced").step(p.url("/TransOut"), p.url("/TransOutRevert"), "{}").step(
        p.url("/TransIn"),
        p.url("/TransInRevert"),
        "{}",
    );
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/submit", dtx.base_url()))
        .header("traceparent", format!("00-{TRACE}-{PARENT_SPAN}-01"))
        .json(&saga.json())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    dtx.wait_status("otlp-traced", "succeed").await;

    let spans = collector
        .wait_for("two rounds and three calls", |s| {
            s.iter().filter(|s| s.name == "round").count() >= 2
                && s.iter().filter(|s| s.name == "participant_call").count() >= 3
        })
        .await;
    let rounds: Vec<&Span> = spans.iter().filter(|s| s.name == "round").collect();
    let calls: Vec<&Span> = spans.iter().filter(|s| s.name == "participant_call").collect();
    for s in rounds.iter().chain(&calls) {
        assert_eq!(s.trace_id, TRACE, "every span in the submitter's trace: {s:?}");
    }
    // Rounds: children of the submitted context, with gid, trans_type and mode.
    for r in &rounds {
        assert_eq!(r.parent_span_id, PARENT_SPAN, "{r:?}");
        assert_eq!(r.attributes["gid"], "otlp-traced");
        assert_eq!(r.attributes["trans_type"], "saga");
    }
    let mut modes: Vec<&str> = rounds.iter().map(|r| r.attributes["mode"].as_str()).collect();
    modes.sort();
    assert_eq!(modes, ["scheduled", "submit"], "the submit's round, then the retry");
    // Calls: children of a round; the participant got each call span's own id.
    let round_ids: Vec<&str> = rounds.iter().map(|r| r.span_id.as_str()).collect();
    for c in &calls {
        assert!(round_ids.contains(&c.parent_span_id.as_str()), "a call below a round: {c:?}");
        assert_eq!(c.attributes["gid"], "otlp-traced");
    }
    let received: Vec<String> = p.calls().iter().map(|c| c.header("traceparent").to_owned()).collect();
    assert_eq!(received.len(), 3, "{received:?}");
    for tp in &received {
        let span_id = &tp[36..52];
        assert!(tp.starts_with(&format!("00-{TRACE}-")) && tp.ends_with("-01"), "{tp}");
        assert!(
            calls.iter().any(|c| c.span_id == span_id),
            "the participant's parent {tp} was exported: {calls:#?}"
        );
    }
    let outcomes: Vec<&str> = calls.iter().map(|c| c.attributes["outcome"].as_str()).collect();
    assert!(outcomes.contains(&"error") && outcomes.contains(&"success"), "{outcomes:?}");
    assert!(collector.service_names.lock().unwrap().iter().all(|n| n == "dtx"));
    dtx.terminate(Duration::from_secs(10)).await;
}
