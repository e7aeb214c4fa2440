//! Cluster members from Kubernetes EndpointSlices (cargo feature `kubernetes`), against a fake API
//! server on loopback that answers the list and watch of `discovery.k8s.io/v1` EndpointSlices as
//! the real one does. Three shardcache processes find each other through it, share a dataset, and
//! drop a member whose slice is deleted.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::cluster::{assert_fetched_once, configure, dataset, read, Node};
use common::S3Server;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::sync::broadcast;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The fake API server's EndpointSlices, and the watch events it sends to every watcher.
#[derive(Clone)]
struct FakeApi {
    slices: Arc<Mutex<Vec<Value>>>,
    events: broadcast::Sender<String>,
}

impl FakeApi {
    /// Serves on 127.0.0.1; only the EndpointSlices of namespace `ml` exist.
    async fn start(slices: Vec<Value>) -> (Self, SocketAddr) {
        let api = Self {
            slices: Arc::new(Mutex::new(slices)),
            events: broadcast::channel(16).0,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let api = server.clone();
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.answer(&req)) }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (api, addr)
    }

    fn answer(&self, req: &http::Request<hyper::body::Incoming>) -> http::Response<Body> {
        let query = req.uri().query().unwrap_or("");
        let selected = query.contains("labelSelector=kubernetes.io%2Fservice-name%3Dshardcache-peers");
        if req.uri().path() != "/apis/discovery.k8s.io/v1/namespaces/ml/endpointslices" || !selected {
            let body = Full::new(Bytes::from_static(b"{\"kind\":\"Status\",\"code\":404}")).boxed();
            return http::Response::builder().status(404).body(body).unwrap();
        }
        if !query.contains("watch=true") {
            let list = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": "1"},
                "items": *self.slices.lock().unwrap(),
            });
            let body = Full::new(Bytes::from(list.to_string())).boxed();
            return http::Response::builder()
                .header("content-type", "application/json")
                .body(body)
                .unwrap();
        }
        // A watch: every event sent from now on, one JSON object per line, until the test ends.
        let events = self.events.subscribe();
        let lines = stream::unfold(events, |mut events| async move {
            let line = events.recv().await.ok()?;
            Some((Ok(Frame::data(Bytes::from(line + "\n"))), events))
        });
        http::Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(lines)))
            .unwrap()
    }

    /// Deletes a slice, telling the watchers.
    fn delete(&self, name: &str) {
        let mut slices = self.slices.lock().unwrap();
        let i = slices.iter().position(|s| s["metadata"]["name"] == name).unwrap();
        let mut slice = slices.remove(i);
        slice["metadata"]["resourceVersion"] = json!("2");
        let _ = self
            .events
            .send(json!({"type": "DELETED", "object": slice}).to_string());
    }
}

/// The EndpointSlice of node `i`'s peer listener, ready.
fn slice(i: usize, peer: SocketAddr) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("shardcache-peers-{i}"),
            "namespace": "ml",
            "resourceVersion": "1",
            "labels": {"kubernetes.io/service-name": "shardcache-peers"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "peer", "port": peer.port(), "protocol": "TCP"}],
        "endpoints": [{
            "addresses": [peer.ip().to_string()],
            "nodeName": format!("node-{i}"),
            "conditions": {"ready": true, "serving": true, "terminating": false},
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_come_and_go_with_the_services_endpoint_slices() {
    let s3 = S3Server::start().await;
    let objects = dataset(&s3, 4, 300_000).await;
    let dir = tempfile::tempdir().unwrap();
    let members = |_: usize, _: &[SocketAddr]| "  kubernetes:\n    service: shardcache-peers\n".to_owned();
    let configured = configure(dir.path(), s3.addr, 3, &members);
    let slices = configured.iter().enumerate().map(|(i, c)| slice(i, c.peer)).collect();
    let (api, api_addr) = FakeApi::start(slices).await;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{api_addr}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake\n    namespace: ml\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap())];
    let nodes: Vec<Node> = configured.into_iter().map(|c| c.spawn_with(&env)).collect();
    for node in &nodes {
        node.wait();
        node.wait_members(3.0).await;
    }
    for node in &nodes {
        for (key, bytes) in &objects {
            assert!(read(&node.client(), "data", key).await == *bytes, "{key} read wrong");
        }
    }
    assert_fetched_once(&s3, &objects);

    api.delete("shardcache-peers-2");
    for node in &nodes[..2] {
        node.wait_members(2.0).await;
    }
}
