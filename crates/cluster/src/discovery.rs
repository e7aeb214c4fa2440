//! Finding the members by DNS: the records of a name (a headless Service) are resolved every
//! `refresh` and each new address is asked which node it is (`GET /peer/v1/member`), so
//! members keep their node name as id whatever their address.
//!
//! A failed lookup keeps the members last found; an address that does not answer yet (a pod
//! starting) is asked again at the next refresh; an address gone from the records is dropped.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::placement::Member;
use super::Peers;

/// Longest wait for one DNS lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps [`Peers`]' members up to date from DNS.
pub struct DnsDiscovery {
    peers: Arc<Peers>,
    name: String,
    port: u16,
    refresh: Duration,
    /// Members listed in the config, always included.
    fixed: Vec<(Member, SocketAddr)>,
}

impl DnsDiscovery {
    /// Discovery of the members behind `name`'s records, peer listeners on `port`, every
    /// `refresh`, besides the `fixed` ones.
    pub fn new(
        peers: Arc<Peers>,
        name: String,
        port: u16,
        refresh: Duration,
        fixed: Vec<(Member, SocketAddr)>,
    ) -> Self {
        Self {
            peers,
            name,
            port,
            refresh,
            fixed,
        }
    }

    /// One refresh; `known` holds the members found so far by address.
    async fn refresh(&self, known: &mut HashMap<SocketAddr, Member>) {
        let lookup = tokio::net::lookup_host((self.name.as_str(), self.port));
        let addrs: HashSet<SocketAddr> = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                tracing::warn!(name = self.name, error = %e, "cluster DNS lookup failed; members unchanged");
                return;
            }
            Err(_) => {
                tracing::warn!(name = self.name, "cluster DNS lookup timed out; members unchanged");
                return;
            }
        };
        let before = known.len();
        known.retain(|addr, _| addrs.contains(addr));
        let mut changed = known.len() != before;
        for addr in addrs {
            if known.contains_key(&addr) {
                continue;
            }
            match self.peers.identify(addr).await {
                Ok(member) => {
                    tracing::info!(%addr, node = member.id, "cluster member found");
                    known.insert(addr, member);
                    changed = true;
                }
                Err(e) => tracing::debug!(%addr, error = %e, "not a member yet"),
            }
        }
        if changed {
            let found = known.iter().map(|(addr, m)| (m.clone(), *addr));
            self.peers
                .set_members(self.fixed.iter().cloned().chain(found).collect());
        }
    }
}

impl DnsDiscovery {
    /// Keeps the members up to date until `shutdown` changes.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut known = HashMap::new();
        loop {
            tokio::select! {
                _ = self.refresh(&mut known) => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(self.refresh) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
