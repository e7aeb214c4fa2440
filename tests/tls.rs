//! HTTPS: the listeners serve the configured certificate and pick up a rotated one on SIGHUP
//! or a file change without a restart; an https upstream is trusted through `ca_file`, and
//! refused without it. The certificates are the fixtures in tests/tls (make-certs.sh).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_rustls::{ClientConfig, RootCertStore, TlsConnector};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls").join(name)
}

fn connector() -> TlsConnector {
    pingora_rustls::install_default_crypto_provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("ca.pem")).unwrap())
        .unwrap();
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A GET over HTTPS on a fresh connection: the status line, the certificate the server
/// presented, and the body.
async fn https_get(port: u16, path: &str) -> (String, Vec<u8>, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector().connect(name, tcp).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&answer[..answer.iter().position(|&b| b == b'\r').unwrap()]).into_owned();
    (status, cert, answer[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listeners_rotate_their_certificate_and_upstreams_trust_a_named_ca() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/b")).unwrap();
    let body = common::data(300_000, 4);
    std::fs::write(dir.path().join("data/b/k"), &body).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(fixture("server1.pem"), &cert).unwrap();
    std::fs::copy(fixture("server1.key"), &key).unwrap();
    let (s3, admin) = (common::free_port(), common::free_port());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{s3}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: 0\n\
             graceful_shutdown_timeout_seconds: 1\ncache:\n  memory_bytes: 33554432\n  disk: null\n\
             upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n\
             tls:\n  cert_file: {}\n  key_file: {}\n",
            dir.path().join("data").display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let server = common::Served::start(&config, admin);

    let (status, first_cert, got) = https_get(s3, "/b/k").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(got, body);
    assert_eq!(
        first_cert,
        CertificateDer::from_pem_file(fixture("server1.pem")).unwrap().to_vec()
    );
    let (status, _, _) = https_get(admin, "/readyz").await;
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "the admin listener is HTTPS too: {status}"
    );
    let plain = common::get(format!("127.0.0.1:{s3}").parse().unwrap(), "/b/k", &[]);
    let refused = tokio::time::timeout(Duration::from_secs(5), tokio::spawn(plain)).await;
    assert!(
        !matches!(refused, Ok(Ok(ref r)) if r.status == 200),
        "plain HTTP must not be served on a TLS listener"
    );

    // shardcache in front of it, trusting its CA through ca_file; and without, refused.
    let upstream = |ca: &str| {
        format!(
            "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ngrace_period_seconds: 0\n\
             graceful_shutdown_timeout_seconds: 1\ncache:\n  memory_bytes: 33554432\n  disk: null\n\
             upstreams:\n  tls:\n    kind: s3\n    endpoint: https://127.0.0.1:{s3}\n{ca}\
             \x20   credentials: {{source: anonymous}}\ndefault_upstream: tls\n",
            common::free_port(),
            common::free_port(),
        )
    };
    let trusting = common::Proxy::start_yaml(&upstream(&format!("    ca_file: {}\n", fixture("ca.pem").display())));
    let r = common::get(trusting.addr, "/b/k", &[]).await;
    assert_eq!((r.status, r.body == body), (200, true), "{}", r.text());
    let untrusting = common::Proxy::start_yaml(&upstream(""));
    let r = common::get(untrusting.addr, "/b/k", &[]).await;
    assert_eq!(r.status, 502, "an untrusted upstream certificate: {}", r.text());

    // The operator commands reach an HTTPS admin listener, trusting the CA through SSL_CERT_FILE.
    let stats = Command::new(env!("CARGO_BIN_EXE_shardcache"))
        .args(["stats", "--admin", &format!("https://127.0.0.1:{admin}")])
        .env("SSL_CERT_FILE", fixture("ca.pem"))
        .output()
        .unwrap();
    assert!(stats.status.success(), "{}", String::from_utf8_lossy(&stats.stderr));
    let untrusted = Command::new(env!("CARGO_BIN_EXE_shardcache"))
        .args(["stats", "--admin", &format!("https://127.0.0.1:{admin}")])
        .env("SSL_CERT_FILE", fixture("server2.pem"))
        .output()
        .unwrap();
    assert!(
        !untrusted.status.success(),
        "an admin certificate from an unknown CA was trusted"
    );

    // Rotation: the new pair is served from the next handshake, after SIGHUP...
    std::fs::copy(fixture("server2.pem"), &cert).unwrap();
    std::fs::copy(fixture("server2.key"), &key).unwrap();
    server.signal(libc::SIGHUP);
    let second = CertificateDer::from_pem_file(fixture("server2.pem")).unwrap().to_vec();
    let start = Instant::now();
    while https_get(s3, "/b/k").await.1 != second {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the rotated certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and with no signal, by the file poll.
    std::fs::copy(fixture("server1.pem"), &cert).unwrap();
    std::fs::copy(fixture("server1.key"), &key).unwrap();
    let start = Instant::now();
    while https_get(s3, "/b/k").await.1 != first_cert {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the polled certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    trusting.stop();
    untrusting.stop();
}
