//! Web identity credentials: the token file is exchanged with STS (a loopback stand-in, found
//! through the standard AWS_ENDPOINT_URL_STS) for temporary keys that sign upstream requests
//! to a real, signature-checking S3 server. Its own test binary: it sets a process-wide variable.

mod common;

use std::sync::{Arc, Mutex};

use common::{data, Proxy, S3Server, ACCESS_KEY, SECRET_KEY};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A minimal STS answering AssumeRoleWithWebIdentity; returns the request bodies it saw.
async fn sts() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                log.lock().unwrap().push(String::from_utf8(body).unwrap());
                let xml = format!(
                    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                     <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{ACCESS_KEY}</AccessKeyId>\
                     <SecretAccessKey>{SECRET_KEY}</SecretAccessKey><SessionToken>session-token</SessionToken>\
                     <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
                     <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/reader/shardcache</Arn>\
                     <AssumedRoleId>AROA:shardcache</AssumedRoleId></AssumedRoleUser></AssumeRoleWithWebIdentityResult>\
                     <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>"
                );
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    xml.len()
                );
                let _ = stream.get_mut().write_all(format!("{head}{xml}").as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_identity_token_is_exchanged_once_for_keys_that_sign_upstream_requests() {
    let (sts_addr, exchanges) = sts().await;
    // SAFETY of intent: this binary holds this one test, so no other thread reads the variable.
    std::env::set_var("AWS_ENDPOINT_URL_STS", format!("http://{sts_addr}"));
    let s3 = S3Server::start().await;
    s3.bucket("irsa");
    let body = data(200_000, 5);
    s3.put("irsa", "k", body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "service-account-jwt").unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ncache:\n  disk: null\n  memory_bytes: 16777216\n\
         upstreams:\n  up:\n    kind: s3\n    endpoint: http://{}\n    credentials:\n      source: web_identity\n      \
         role_arn: arn:aws:iam::123456789012:role/reader\n      token_file: {}\ndefault_upstream: up\n",
        common::free_port(),
        common::free_port(),
        s3.addr,
        token.display()
    );
    let proxy = Proxy::start_yaml(&yaml);
    for key in ["k", "k"] {
        let out = proxy
            .client()
            .get_object()
            .bucket("irsa")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(out.body.collect().await.unwrap().into_bytes().to_vec(), body);
    }
    proxy.client().list_objects_v2().bucket("irsa").send().await.unwrap();

    let exchanges = exchanges.lock().unwrap().clone();
    assert_eq!(
        exchanges.len(),
        1,
        "credentials are cached until they near expiry: {exchanges:?}"
    );
    assert!(
        exchanges[0].contains("Action=AssumeRoleWithWebIdentity"),
        "{}",
        exchanges[0]
    );
    assert!(
        exchanges[0].contains("WebIdentityToken=service-account-jwt"),
        "{}",
        exchanges[0]
    );
    assert!(
        exchanges[0].contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Freader"),
        "{}",
        exchanges[0]
    );
}
