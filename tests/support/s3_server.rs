//! A real S3 server for the client suite (`scripts/client-tests.sh`): s3s-fs over a directory,
//! verifying every request's SigV4 signature, on a loopback port.
//!
//! Usage: `s3-server ROOT ACCESS_KEY SECRET_KEY [SECONDS]`. Binds 127.0.0.1:0, prints the port
//! on one line, and serves until killed or for SECONDS (default 3600), so it never outlives the
//! script that started it by long.

#[path = "s3s_service.rs"]
mod s3s_service;

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (root, access_key, secret_key, lifetime) = match args.as_slice() {
        [root, key, secret] => (root, key, secret, 3600),
        [root, key, secret, secs] => (root, key, secret, secs.parse().expect("SECONDS is a number")),
        _ => {
            eprintln!("usage: s3-server ROOT ACCESS_KEY SECRET_KEY [SECONDS]");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(root).expect("creating the root");
    let service = s3s_service::s3s_service(root.as_ref(), access_key, secret_key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding loopback");
    println!("{}", listener.local_addr().expect("bound address").port());
    let serve = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(lifetime), serve).await;
}
