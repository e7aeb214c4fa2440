//! HTTP and S3 details on the wire: error documents, upstream calls per request, calls that are
//! not S3, pipelined requests.

mod common;

use common::{Proxy, ProxyOptions, S3Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup(bucket: &str) -> (S3Server, Proxy) {
    let s3 = S3Server::start().await;
    s3.bucket(bucket);
    let proxy = Proxy::start(s3.addr, ProxyOptions::default());
    (s3, proxy)
}

/// A raw HEAD over a fresh connection: status and headers.
async fn head(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_of_a_missing_key_is_one_upstream_call() {
    let (s3, proxy) = setup("heads").await;
    s3.clear();
    let (status, text) = head(proxy.addr, "/heads/missing").await;
    assert_eq!(status, 404);
    assert!(text.ends_with("\r\n\r\n"), "a HEAD answer has no body: {text}");
    assert_eq!(s3.request_count(), 1, "one upstream call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_documents_carry_the_fields_s3_sends() {
    let (s3, proxy) = setup("errdoc").await;
    s3.put("errdoc", "k", b"0123456789".to_vec()).await;
    let r = common::get(proxy.addr, "/errdoc/missing%20key", &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("<Key>missing key</Key>"), "{}", r.text());
    let r = common::get(proxy.addr, "/errdoc/k", &[("Range", "bytes=20-30")]).await;
    assert_eq!(r.status, 416);
    assert!(
        r.text().contains("<RangeRequested>bytes=20-30</RangeRequested>"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("<ActualObjectSize>10</ActualObjectSize>"));
    let r = common::get(proxy.addr, "/errdoc/k", &[("If-Match", "\"nope\"")]).await;
    assert_eq!(r.status, 412);
    assert!(r.text().contains("<Condition>If-Match</Condition>"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_other_aws_services_are_refused_not_re_signed_as_s3() {
    let (s3, proxy) = setup("sts").await;
    s3.clear();
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let body = "Action=GetCallerIdentity&Version=2011-06-15";
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 501"), "{text}");
    assert!(text.contains("S3 API only"), "{text}");
    assert_eq!(s3.request_count(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (s3, proxy) = setup("pipe").await;
    for (key, body) in [("a", "first"), ("b", "second!"), ("c", "third one")] {
        s3.put("pipe", key, body.as_bytes().to_vec()).await;
    }
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let one = |key: &str, last: bool| {
        let close = if last { "Connection: close\r\n" } else { "" };
        format!("GET /pipe/{key} HTTP/1.1\r\nHost: x\r\n{close}\r\n")
    };
    let all = [one("a", false), one("b", false), one("c", true)].concat();
    s.write_all(all.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("the connection is closed after the last answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    let bodies: Vec<&str> = text
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|answer| answer.split("\r\n\r\n").nth(1).unwrap_or_default())
        .collect();
    assert_eq!(bodies, ["first", "second!", "third one"], "{text}");
}
