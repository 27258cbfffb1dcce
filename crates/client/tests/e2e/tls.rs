//! The `rustls` feature: the SDK over HTTPS to a dtx serving TLS, trusting a private CA made at
//! test time, and the coordinator calling an HTTPS participant (mutual TLS) for a saga.

use dtx_client::{Client, Payload};
use dtx_tests::tls::Pki;
use dtx_tests::{Participant, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_talks_https_to_a_tls_coordinator() {
    let pki = Pki::new();
    let s = TestServer::spawn(|c| {
        c.tls = Some((pki.path("server.pem"), pki.path("server.key")));
        c.engine.participant_tls = dtx_engine::ParticipantTls {
            ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            identity_pem: Some((
                pki.client_cert_pem.clone().into_bytes(),
                pki.client_key_pem.clone().into_bytes(),
            )),
            grpc_tls: false,
        };
    })
    .await;
    let https = Participant::spawn_tls(pki.mutual_tls_server()).await;
    let http = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(pki.ca_pem.as_bytes()).expect("CA"))
        .build()
        .expect("HTTPS client");
    let base = s.base_url().replace("http://", "https://");
    let client = Client::http_with(http, &base).expect("client");
    let gid = client.new_gid().await.expect("newGid over HTTPS");
    client
        .saga(&gid)
        .add(
            https.url("/TransOut"),
            https.url("/TransOutRevert"),
            Payload::json(&serde_json::json!({"amount": 30})).expect("payload"),
        )
        .wait_result(true)
        .submit()
        .await
        .expect("saga over HTTPS");
    let loaded = s.engine().load(&gid).await.expect("load").expect("stored");
    assert_eq!(loaded.global.status.as_str(), "succeed");
    assert_eq!(https.paths(), ["/TransOut"]);
}
