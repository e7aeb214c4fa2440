//! Key rotation without a restart: the `auth` section (keys, secrets, statements, region, skew)
//! is read again on SIGHUP, and whenever the config file or a file it read changes. Files are
//! polled by content every [`POLL`], which also sees Kubernetes updating a mounted Secret (it
//! swaps a symlink, so a file's own mtime does not move).
//!
//! The new gate replaces the old whole; a request keeps the gate it started with, and no
//! connection is dropped. A reload that fails (a bad file, a missing secret) keeps the rules in
//! force, logs why and counts it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::SharedGate;

/// How often watched files are read for changes.
pub const POLL: Duration = Duration::from_secs(2);

/// Reloads the gate of a running shardcache.
pub struct AuthReload {
    config: PathBuf,
    gate: Arc<SharedGate>,
    metrics: Arc<Metrics>,
    /// The files the rules in force were read from, besides the config file.
    files: Mutex<Vec<PathBuf>>,
}

impl AuthReload {
    /// Watches `config` and `files` (what the gate in force was built from).
    pub fn new(config: PathBuf, files: Vec<PathBuf>, gate: Arc<SharedGate>, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            gate,
            metrics,
            files: Mutex::new(files),
        }
    }

    /// A digest of every watched file's content (a missing file counts as its own state).
    fn fingerprint(&self) -> [u8; 32] {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut h = Sha256::new();
        for path in std::iter::once(&self.config).chain(&files) {
            match std::fs::read(path) {
                Ok(bytes) => {
                    h.update((bytes.len() as u64).to_le_bytes());
                    h.update(&bytes);
                }
                Err(_) => h.update(u64::MAX.to_le_bytes()),
            }
        }
        h.finalize().into()
    }

    /// Reads the config again and swaps in its gate.
    fn reload(&self) -> Result<usize, String> {
        let config = Config::load(&self.config).map_err(|e| format!("{}: {e}", self.config.display()))?;
        let auth = config
            .auth
            .ok_or("the auth section was removed; authentication stays on until a restart")?;
        let (gate, files) = crate::app::gate(&auth).map_err(|e| e.to_string())?;
        let keys = gate.verifier.key_count();
        self.gate.replace(gate);
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = files;
        Ok(keys)
    }
}

#[async_trait]
impl BackgroundService for AuthReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; auth files are still polled");
                None
            }
        };
        let mut seen = self.fingerprint();
        loop {
            let asked = tokio::select! {
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
                _ = tokio::time::sleep(POLL) => false,
                _ = shutdown.changed() => return,
            };
            let now = self.fingerprint();
            if !asked && now == seen {
                continue;
            }
            let result = self.reload();
            seen = self.fingerprint();
            let label = if result.is_ok() { "ok" } else { "error" };
            self.metrics.auth_reloads.with_label_values(&[label]).inc();
            match result {
                Ok(keys) => tracing::info!(keys, on_signal = asked, "auth reloaded"),
                Err(e) => tracing::error!(error = %e, "auth reload failed; the previous keys and policy stay in force"),
            }
        }
    }
}
