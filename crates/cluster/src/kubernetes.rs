//! Finding the members from Kubernetes (cargo feature `kubernetes`): the ready, non-terminating
//! endpoints of a Service's EndpointSlices, watched through the API server. A member's id is its
//! endpoint's node name and its zone the endpoint's zone, both filled in by Kubernetes.
//!
//! kube-rs's watcher lists the slices, then watches them, resuming (or listing again) after a
//! broken watch with backoff. Until the first list completes the members stay as configured; a
//! failing API server leaves the last members in place.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;

use super::placement::Member;
use super::Peers;

/// Wait before trying again to set up the API client.
const CLIENT_RETRY: Duration = Duration::from_secs(10);

/// Keeps [`Peers`]' members up to date from a Service's EndpointSlices.
pub struct KubeDiscovery {
    peers: Arc<Peers>,
    service: String,
    namespace: Option<String>,
    port: String,
    /// Members listed in the config, always included.
    fixed: Vec<(Member, SocketAddr)>,
}

impl KubeDiscovery {
    /// Discovery of the endpoints of Service `service` (in `namespace`, else the client's own),
    /// their peer listeners on the slice port named `port`, besides the `fixed` members.
    pub fn new(
        peers: Arc<Peers>,
        service: String,
        namespace: Option<String>,
        port: String,
        fixed: Vec<(Member, SocketAddr)>,
    ) -> Self {
        Self {
            peers,
            service,
            namespace,
            port,
            fixed,
        }
    }

    async fn client(&self) -> Client {
        loop {
            match Client::try_default().await {
                Ok(client) => return client,
                Err(e) => {
                    tracing::warn!(error = %e, "no Kubernetes API client for cluster membership; trying again");
                    tokio::time::sleep(CLIENT_RETRY).await;
                }
            }
        }
    }

    async fn watch(&self) {
        let client = self.client().await;
        let api: Api<EndpointSlice> = match &self.namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::default_namespaced(client),
        };
        let selector = format!("kubernetes.io/service-name={}", self.service);
        let events = watcher::watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
        let mut events = std::pin::pin!(events);
        let mut slices: HashMap<String, EndpointSlice> = HashMap::new();
        let mut listing: Option<HashMap<String, EndpointSlice>> = None;
        while let Some(event) = events.next().await {
            let changed = match event {
                Err(e) => {
                    tracing::warn!(error = %e, service = self.service, "watching the cluster's EndpointSlices");
                    false
                }
                Ok(Event::Apply(slice)) => {
                    slices.insert(name(&slice), slice);
                    true
                }
                Ok(Event::Delete(slice)) => slices.remove(&name(&slice)).is_some(),
                Ok(Event::Init) => {
                    listing = Some(HashMap::new());
                    false
                }
                Ok(Event::InitApply(slice)) => {
                    listing.get_or_insert_default().insert(name(&slice), slice);
                    false
                }
                Ok(Event::InitDone) => {
                    slices = listing.take().unwrap_or_default();
                    true
                }
            };
            if changed {
                let found = members(slices.values(), &self.port);
                tracing::info!(members = found.len(), "cluster members from Kubernetes");
                self.peers
                    .set_members(self.fixed.iter().cloned().chain(found).collect());
            }
        }
    }
}

fn name(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

/// The members `slices` list: endpoints that are ready (or do not say) and not terminating, with
/// a node name and an address, on the slice's port named `port`.
pub fn members<'a>(slices: impl Iterator<Item = &'a EndpointSlice>, port: &str) -> Vec<(Member, SocketAddr)> {
    let mut out = Vec::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let Some(number) = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(port))
            .and_then(|p| p.port)
        else {
            continue;
        };
        let Ok(number) = u16::try_from(number) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let address = endpoint.addresses.first().and_then(|a| a.parse::<IpAddr>().ok());
            let (Some(node), Some(ip), true, false) = (&endpoint.node_name, address, ready, terminating) else {
                continue;
            };
            let member = Member {
                id: node.clone(),
                zone: endpoint.zone.clone(),
            };
            out.push((member, SocketAddr::new(ip, number)));
        }
    }
    out
}

impl KubeDiscovery {
    /// Keeps the members up to date until `shutdown` changes.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.watch() => tracing::warn!("the EndpointSlice watch ended; cluster members stay as they are"),
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_ready_serving_endpoints_with_a_node_become_members() {
        let a = slice(serde_json::json!({
            "metadata": {"name": "peers-a"},
            "addressType": "IPv4",
            "ports": [{"name": "s3", "port": 8080}, {"name": "peer", "port": 9400}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "nodeName": "gpu-1", "zone": "z1", "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "nodeName": "gpu-2", "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"], "nodeName": "gpu-3", "conditions": {"ready": true, "terminating": true}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.5"], "nodeName": "gpu-5"}
            ]
        }));
        let no_port = slice(serde_json::json!({
            "metadata": {"name": "peers-b"},
            "addressType": "IPv4",
            "ports": [{"name": "s3", "port": 8080}],
            "endpoints": [{"addresses": ["10.0.0.6"], "nodeName": "gpu-6"}]
        }));
        let found = members([&a, &no_port].into_iter(), "peer");
        let ids: Vec<(&str, Option<&str>, String)> = found
            .iter()
            .map(|(m, addr)| (m.id.as_str(), m.zone.as_deref(), addr.to_string()))
            .collect();
        assert_eq!(
            ids,
            [
                ("gpu-1", Some("z1"), "10.0.0.1:9400".to_owned()),
                ("gpu-5", None, "10.0.0.5:9400".to_owned())
            ]
        );
    }
}
