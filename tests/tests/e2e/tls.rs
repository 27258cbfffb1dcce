//! TLS end to end (issue 12), with a CA made at test time: dtx serves HTTPS and gRPC over TLS,
//! and calls an HTTPS participant and a gRPC participant over TLS, both requiring dtx's client
//! certificate (mutual TLS); without the CA, the certificate is refused.

use std::time::Duration;

use dtx_proto::dtmgimp::dtm_client::DtmClient;
use dtx_tests::grpc::{GrpcParticipant, GrpcSaga, req_bytes};
use dtx_tests::tls::Pki;
use dtx_tests::{Participant, Saga, TestServer, eventually};
use serde_json::Value;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn participant_tls(pki: &Pki) -> dtx_engine::ParticipantTls {
    dtx_engine::ParticipantTls {
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        identity_pem: Some((
            pki.client_cert_pem.clone().into_bytes(),
            pki.client_key_pem.clone().into_bytes(),
        )),
        grpc_tls: true,
    }
}

async fn status(s: &TestServer, gid: &str) -> String {
    let loaded = s.engine().load(gid).await.expect("load");
    loaded.map(|l| l.global.status.as_str().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_run_over_tls_both_ways_with_mutual_tls_to_participants() {
    let pki = Pki::new();
    let s = TestServer::spawn(|c| {
        c.tls = Some((pki.path("server.pem"), pki.path("server.key")));
        c.engine.participant_tls = participant_tls(&pki);
    })
    .await;
    let https = Participant::spawn_tls(pki.mutual_tls_server()).await;
    let grpcs = GrpcParticipant::spawn_tls(pki.mutual_tls_grpc()).await;

    // HTTPS front door, HTTPS participant.
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(pki.ca_pem.as_bytes()).expect("CA"))
        .build()
        .expect("client");
    let root = s.root_url().replace("http://", "https://");
    let body = Saga::new("tls-http")
        .step(https.url("/TransOut"), https.url("/TransOutRevert"), "{}")
        .wait_result()
        .json();
    assert!(https.url("/x").starts_with("https://"));
    let resp =
        client.post(format!("{root}/api/dtmsvr/submit")).json(&body).send().await.expect("HTTPS submit");
    let code = resp.status().as_u16();
    let reply: Value = resp.json().await.unwrap_or_default();
    assert_eq!(code, 200, "{reply}");
    assert_eq!(status(&s, "tls-http").await, "succeed");
    assert_eq!(https.paths(), ["/TransOut"]);
    // Plain HTTP to a TLS listener gets nowhere.
    assert!(reqwest::Client::new().get(format!("{}/api/ping", s.root_url())).send().await.is_err());

    // gRPC over TLS front door; a gRPC participant over TLS and an HTTPS one in one saga.
    let tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", s.grpc_addr()))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect over TLS");
    let saga = GrpcSaga::new("tls-grpc")
        .step(grpcs.url("TransOut"), grpcs.url("TransOutRevert"), req_bytes(30))
        .step(https.url("/TransIn"), https.url("/TransInRevert"), b"{}".to_vec())
        .wait_result();
    DtmClient::new(channel).submit(saga.request()).await.expect("Submit over TLS");
    assert_eq!(status(&s, "tls-grpc").await, "succeed");
    assert_eq!(grpcs.methods(), ["TransOut"]);
    assert_eq!(https.paths(), ["/TransOut", "/TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_or_a_missing_client_certificate_is_refused() {
    let pki = Pki::new();
    let https = Participant::spawn_tls(pki.mutual_tls_server()).await;
    // No CA: the participant's certificate is not trusted.
    let s = TestServer::start().await;
    let (code, reply) = s.submit(&Saga::new("no-ca").step(https.url("/TransOut"), "", "{}").json()).await;
    assert_eq!(code, 200, "{reply}");
    let q = s.wait_idle("no-ca").await;
    let last = q["branches"][1]["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(last.to_lowercase().contains("certificate"), "{last}");
    // The CA but no client certificate: the participant refuses the handshake.
    let s = TestServer::spawn(|c| {
        c.engine.participant_tls = dtx_engine::ParticipantTls { identity_pem: None, ..participant_tls(&pki) }
    })
    .await;
    s.submit(&Saga::new("no-client-cert").step(https.url("/TransOut"), "", "{}").json()).await;
    let q = eventually(Duration::from_secs(10), "an attempt", || async {
        let q = s.query("no-client-cert").await;
        (q["branches"][1]["attempts"].as_i64() >= Some(1) && q["branches"][1]["last_error"] != Value::Null)
            .then_some(q)
    })
    .await;
    assert_eq!(q["transaction"]["status"], "submitted", "{q}");
    assert!(https.paths().is_empty(), "the participant never saw a request");
}
