//! The transactions the bench drives, and the direct-call baselines they are compared with.
//!
//! Every case is a 2-step business transaction against the same participants: a saga with two
//! steps, a TCC with two branches, a message with two actions, or the two participant calls
//! made directly (the baseline: what the work costs without a coordinator).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use dtx_engine::participant::grpc::RawCodec;
use dtx_proto::dtmgimp::dtm_client::DtmClient;
use dtx_proto::dtmgimp::{DtmBranchRequest, DtmRequest};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::coordinator::Node;
use crate::participant::{Completions, GrpcParticipant, HttpParticipant};

/// What one transaction of a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// A 2-step saga submitted over HTTP; done when both actions were called.
    Saga,
    /// The same saga with `wait_result`: done when the submit answers.
    SagaWait,
    /// A 2-step saga submitted over gRPC to gRPC participants.
    SagaGrpc,
    /// TCC over HTTP: prepare, register and try two branches, submit; done when both confirms
    /// were called.
    Tcc,
    /// A 2-action 2-phase message over HTTP: prepare, submit; done when both actions were called.
    Msg,
    /// TCC over gRPC: prepare, register and try two branches, submit (gRPC participants).
    TccGrpc,
    /// A 2-action 2-phase message over gRPC (gRPC participants).
    MsgGrpc,
    /// Baseline: the two HTTP participant calls made directly, no coordinator.
    BaselineHttp,
    /// Baseline: the two gRPC participant calls made directly, no coordinator.
    BaselineGrpc,
}

impl Case {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Case::Saga => "saga",
            Case::SagaWait => "saga-wait",
            Case::SagaGrpc => "saga-grpc",
            Case::Tcc => "tcc",
            Case::Msg => "msg",
            Case::TccGrpc => "tcc-grpc",
            Case::MsgGrpc => "msg-grpc",
            Case::BaselineHttp => "baseline-http",
            Case::BaselineGrpc => "baseline-grpc",
        }
    }

    /// Whether it goes through the coordinator.
    pub fn uses_coordinator(self) -> bool {
        !matches!(self, Case::BaselineHttp | Case::BaselineGrpc)
    }

    /// The baseline with the same participant calls.
    pub fn baseline(self) -> Case {
        match self {
            Case::SagaGrpc | Case::TccGrpc | Case::MsgGrpc | Case::BaselineGrpc => Case::BaselineGrpc,
            _ => Case::BaselineHttp,
        }
    }
}

/// Everything a transaction needs: the nodes to submit to, the participants, the clients.
pub struct Env {
    /// The coordinator nodes (submits go round-robin).
    pub nodes: Vec<NodeClients>,
    /// The HTTP participant.
    pub http_participant: String,
    /// The gRPC participant's address.
    pub grpc_participant: std::net::SocketAddr,
    /// Done-notifications from both participants.
    pub completions: Arc<Completions>,
    /// A pooled HTTP client (no proxy): status queries and metrics.
    pub http: reqwest::Client,
    /// The load generator's HTTP client: the transactions' calls to the coordinators and the
    /// baseline's calls to the participant. hyper's pooled client, as the engine's participant
    /// calls use (ADR 15): reqwest parsed each URL three times per request (its own parse, its
    /// redirect policy's and the pending request's), ~45 % of the load generator's instructions,
    /// on the cores the coordinator is measured on.
    load: LoadClient,
    /// A channel to the gRPC participant (baseline).
    pub participant_channel: Channel,
    /// Distinguishes this run's gids from earlier runs' on a reused store.
    pub run_id: String,
    /// How long a transaction may take before it counts as lost.
    pub deadline: Duration,
}

/// See [`Env::load`].
type LoadClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

fn load_client() -> LoadClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// One node and a gRPC client for it.
pub struct NodeClients {
    /// `http://…/api/dtmsvr`.
    pub base: String,
    /// The `dtmgimp.Dtm` client.
    pub dtm: DtmClient<Channel>,
}

impl NodeClients {
    /// Connects to a node's gRPC API.
    pub async fn connect(node: &Node) -> anyhow::Result<NodeClients> {
        let channel = Channel::from_shared(format!("http://{}", node.grpc))?.connect().await?;
        Ok(NodeClients { base: node.base.clone(), dtm: DtmClient::new(channel) })
    }
}

impl Env {
    /// Builds the environment for nodes and participants.
    pub async fn new(
        nodes: &[Node],
        http_participant: &HttpParticipant,
        grpc_participant: &GrpcParticipant,
        completions: Arc<Completions>,
        http: reqwest::Client,
    ) -> anyhow::Result<Env> {
        let mut clients = Vec::new();
        for n in nodes {
            clients.push(NodeClients::connect(n).await?);
        }
        let participant_channel =
            Channel::from_shared(format!("http://{}", grpc_participant.addr()))?.connect().await?;
        Ok(Env {
            nodes: clients,
            http_participant: format!("http://{}/busi", http_participant.addr()),
            grpc_participant: grpc_participant.addr(),
            completions,
            http,
            load: load_client(),
            participant_channel,
            run_id: format!("{:08x}", rand_u32()),
            deadline: Duration::from_secs(120),
        })
    }

    /// The gid of transaction `i` of a case.
    pub fn gid(&self, case: Case, i: usize) -> String {
        format!("bench-{}-{}-{i}", case.name(), self.run_id)
    }

    fn node(&self, i: usize) -> &NodeClients {
        &self.nodes[i % self.nodes.len()]
    }

    fn url(&self, kind: &str) -> String {
        format!("{}/{kind}", self.http_participant)
    }

    fn grpc_url(&self, method: &str) -> String {
        format!("{}/{}/{method}", self.grpc_participant, crate::participant::GRPC_SERVICE)
    }

    /// A 2-step saga body (both steps compensable).
    pub fn saga_body(&self, gid: &str, wait: bool) -> Value {
        json!({
            "gid": gid, "trans_type": "saga", "wait_result": wait,
            "steps": [{"action": self.url("step"), "compensate": self.url("undo")},
                      {"action": self.url("step"), "compensate": self.url("undo")}],
            "payloads": ["{\"amount\":30}", "{\"amount\":30}"],
        })
    }

    /// Runs transaction `i`; returns its latency as the client sees it.
    pub async fn run_one(&self, case: Case, i: usize) -> anyhow::Result<Duration> {
        let gid = self.gid(case, i);
        let node = self.node(i);
        let done = match case {
            Case::SagaWait => None,
            _ => Some(self.completions.expect(&gid, 2)),
        };
        let started = Instant::now();
        match case {
            Case::Saga | Case::SagaWait => {
                self.post(&format!("{}/submit", node.base), &self.saga_body(&gid, case == Case::SagaWait))
                    .await?;
            }
            Case::SagaGrpc => {
                let steps = json!([
                    {"action": self.grpc_url("Step"), "compensate": self.grpc_url("Undo")},
                    {"action": self.grpc_url("Step"), "compensate": self.grpc_url("Undo")},
                ]);
                let req = DtmRequest {
                    gid: gid.clone(),
                    trans_type: "saga".into(),
                    steps: steps.to_string(),
                    bin_payloads: vec![Vec::new(), Vec::new()],
                    ..DtmRequest::default()
                };
                node.dtm.clone().submit(req).await.context("gRPC submit")?;
            }
            Case::Tcc => {
                let head = json!({"gid": gid, "trans_type": "tcc"});
                self.post(&format!("{}/prepare", node.base), &head).await?;
                for branch in ["01", "02"] {
                    let reg = json!({"gid": gid, "trans_type": "tcc", "branch_id": branch,
                        "data": "{\"amount\":30}", "confirm": self.url("step"), "cancel": self.url("undo")});
                    self.post(&format!("{}/registerBranch", node.base), &reg).await?;
                    let try_url =
                        format!("{}?gid={gid}&trans_type=tcc&branch_id={branch}&op=try", self.url("try"));
                    self.post(&try_url, &json!({"amount": 30})).await?;
                }
                self.post(&format!("{}/submit", node.base), &head).await?;
            }
            Case::Msg => {
                let body = json!({
                    "gid": gid, "trans_type": "msg", "query_prepared": self.url("check"),
                    "steps": [{"action": self.url("step")}, {"action": self.url("step")}],
                    "payloads": ["{\"amount\":30}", "{\"amount\":30}"],
                });
                self.post(&format!("{}/prepare", node.base), &body).await?;
                self.post(&format!("{}/submit", node.base), &body).await?;
            }
            Case::TccGrpc => {
                let mut dtm = node.dtm.clone();
                let head = DtmRequest { gid: gid.clone(), trans_type: "tcc".into(), ..DtmRequest::default() };
                dtm.prepare(head.clone()).await.context("gRPC prepare")?;
                for branch in ["01", "02"] {
                    let data = [("confirm", "Step"), ("cancel", "Undo")]
                        .into_iter()
                        .map(|(k, m)| (k.to_owned(), self.grpc_url(m)))
                        .collect();
                    let reg = DtmBranchRequest {
                        gid: gid.clone(),
                        trans_type: "tcc".into(),
                        branch_id: branch.into(),
                        op: "try".into(),
                        data,
                        busi_payload: b"{\"amount\":30}".to_vec(),
                    };
                    dtm.register_branch(reg).await.context("gRPC registerBranch")?;
                    self.grpc_participant_call("Try", &gid).await?;
                }
                dtm.submit(head).await.context("gRPC submit")?;
            }
            Case::MsgGrpc => {
                let steps = json!([{"action": self.grpc_url("Step")}, {"action": self.grpc_url("Step")}]);
                let req = DtmRequest {
                    gid: gid.clone(),
                    trans_type: "msg".into(),
                    steps: steps.to_string(),
                    bin_payloads: vec![b"{\"amount\":30}".to_vec(), b"{\"amount\":30}".to_vec()],
                    query_prepared: self.grpc_url("Check"),
                    ..DtmRequest::default()
                };
                let mut dtm = node.dtm.clone();
                dtm.prepare(req.clone()).await.context("gRPC prepare")?;
                dtm.submit(req).await.context("gRPC submit")?;
            }
            Case::BaselineHttp => {
                for _ in 0..2 {
                    let url =
                        format!("{}?gid={gid}&trans_type=saga&branch_id=01&op=action", self.url("step"));
                    self.post(&url, &json!({"amount": 30})).await?;
                }
            }
            Case::BaselineGrpc => {
                for _ in 0..2 {
                    self.grpc_participant_call("Step", &gid).await?;
                }
            }
        }
        if let Some(done) = done
            && tokio::time::timeout(self.deadline, done).await.is_err()
        {
            self.completions.forget(&gid);
            bail!("{gid}: not done within {:?}", self.deadline);
        }
        Ok(started.elapsed())
    }

    /// Calls the gRPC participant directly (a TCC try, or the baseline's calls).
    async fn grpc_participant_call(&self, method: &str, gid: &str) -> anyhow::Result<()> {
        let mut grpc = tonic::client::Grpc::new(self.participant_channel.clone());
        grpc.ready().await.context("gRPC participant")?;
        let mut req = tonic::Request::new(Bytes::new());
        req.metadata_mut().insert("dtm-gid", gid.parse().context("gid as metadata")?);
        let path = format!("/{}/{method}", crate::participant::GRPC_SERVICE).parse().context("gRPC path")?;
        grpc.unary(req, path, RawCodec).await.context("gRPC participant call")?;
        Ok(())
    }

    async fn post(&self, url: &str, body: &Value) -> anyhow::Result<()> {
        let body = Bytes::from(serde_json::to_vec(body).context("request body")?);
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(body))
            .with_context(|| format!("POST {url}"))?;
        let answer = self.load.request(request).await.with_context(|| format!("POST {url}"))?;
        let status = answer.status();
        // Read to the end, so the connection goes back to the pool.
        let text = answer.into_body().collect().await.with_context(|| format!("POST {url}"))?.to_bytes();
        if !status.is_success() {
            bail!("POST {url}: {status} {}", String::from_utf8_lossy(&text));
        }
        Ok(())
    }

    /// SQL statements the nodes have sent to their database so far (the sum of their
    /// `dtx_store_statements_total`); `None` when a node does not expose it.
    pub async fn statements(&self) -> Option<u64> {
        let mut total = 0;
        for node in &self.nodes {
            let root = node.base.trim_end_matches("/api/dtmsvr");
            let text = self.http.get(format!("{root}/api/metrics")).send().await.ok()?.text().await.ok()?;
            total += statements_metric(&text)?;
        }
        Some(total)
    }

    /// The final status of a transaction (`None` if unknown).
    pub async fn status(&self, gid: &str, i: usize) -> anyhow::Result<Option<String>> {
        let url = format!("{}/query?gid={gid}", self.node(i).base);
        let v: Value = self.http.get(&url).send().await?.json().await?;
        Ok(v["transaction"]["status"].as_str().map(str::to_owned))
    }
}

/// The value of `dtx_store_statements_total` in a metrics exposition.
fn statements_metric(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("dtx_store_statements_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// A random number, without a dependency for it.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::statements_metric;

    #[test]
    fn reads_the_statement_counter() {
        let text = "# HELP dtx_store_statements SQL statements\n# TYPE dtx_store_statements counter\n\
                    dtx_store_statements_total 1234\ndtx_claimed_total 5\n";
        assert_eq!(statements_metric(text), Some(1234));
        assert_eq!(statements_metric("dtx_claimed_total 5\n"), None);
    }
}
