//! A throwaway PKI for TLS tests, made at test time with rcgen: a CA, a server certificate for
//! `localhost` / `127.0.0.1`, and a client certificate (mutual TLS), written as PEM files.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;

/// The CA and the certificates it signed, in memory and as files in a temporary directory.
pub struct Pki {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// Server certificate and key (PEM), for `localhost` and `127.0.0.1`.
    pub server_cert_pem: String,
    /// See `server_cert_pem`.
    pub server_key_pem: String,
    /// Client certificate and key (PEM).
    pub client_cert_pem: String,
    /// See `client_cert_pem`.
    pub client_key_pem: String,
    dir: TempDir,
}

impl Pki {
    /// A fresh CA and its certificates.
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "dtx test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(ca, ca_key).expect("CA");
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(names).expect("params");
            p.distinguished_name.push(DnType::CommonName, "dtx test");
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert_pem, server_key_pem) =
            leaf(vec!["localhost".into(), "127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert_pem, client_key_pem) =
            leaf(vec!["dtx-client".into()], ExtendedKeyUsagePurpose::ClientAuth);
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki {
            ca_pem: issuer.pem(),
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
            dir,
        };
        for (name, text) in [
            ("ca.pem", &pki.ca_pem),
            ("server.pem", &pki.server_cert_pem),
            ("server.key", &pki.server_key_pem),
            ("client.pem", &pki.client_cert_pem),
            ("client.key", &pki.client_key_pem),
        ] {
            std::fs::write(pki.dir.path().join(name), text).expect("write PEM");
        }
        pki
    }

    /// A file of the PKI: `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A rustls server configuration with the server certificate that requires a client
    /// certificate signed by the CA (mutual TLS).
    pub fn mutual_tls_server(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA")).expect("root");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .expect("client verifier");
        let chain = vec![CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// tonic's server TLS with the server certificate, requiring a client certificate.
    pub fn mutual_tls_grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.server_cert_pem, &self.server_key_pem))
            .client_ca_root(tonic::transport::Certificate::from_pem(&self.ca_pem))
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}
