//! Rotation without a restart: the `auth` section (keys, secrets, statements, region, skew) and
//! the listeners' TLS certificate are read again on SIGHUP, and whenever the config file or a
//! file they were read from changes. Files are polled by content every [`POLL`], which also sees
//! Kubernetes updating a mounted Secret (it swaps a symlink, so a file's own mtime does not
//! move).
//!
//! The new gate replaces the old whole and a request keeps the gate it started with; a new
//! certificate serves the handshakes from then on. No connection is dropped. A reload that fails
//! (a bad file, a missing secret, a key that does not match its certificate) keeps what is in
//! force, logs why and counts it.
//!
//! It uses `config`, `auth`, `tls`, `metrics` and the proxy's gate types; it must not reach `app`
//! (which starts it) or the cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, SignalKind};

use crate::auth::{AuthOptions, Policy, Verifier};
use crate::config::{AuthConfig, Config, ConfigError};
use crate::metrics::Metrics;
use crate::proxy::{Gate, SharedGate};
use crate::tls::ServerCert;

/// How often watched files are read for changes.
pub const POLL: Duration = Duration::from_secs(2);

/// Reloads the gate and the certificate of a running shardcache.
pub struct Reloader {
    config: PathBuf,
    /// The gate in force and the files it was built from, besides the config file.
    auth: Option<(Arc<SharedGate>, Mutex<Vec<PathBuf>>)>,
    cert: Option<Arc<ServerCert>>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// Watches `config`, and the files the gate (`auth`: the gate and the files it read) and
    /// the certificate were read from.
    pub fn new(
        config: PathBuf,
        auth: Option<(Arc<SharedGate>, Vec<PathBuf>)>,
        cert: Option<Arc<ServerCert>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            auth: auth.map(|(gate, files)| (gate, Mutex::new(files))),
            cert,
            metrics,
        }
    }

    /// A digest of every watched file's content (a missing file counts as its own state).
    fn fingerprint(&self) -> [u8; 32] {
        let mut files = vec![self.config.clone()];
        if let Some((_, read)) = &self.auth {
            files.extend(read.lock().iter().cloned());
        }
        files.extend(self.cert.iter().flat_map(|c| c.files()));
        let mut h = Sha256::new();
        for path in &files {
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
    fn reload_auth(&self, gate: &SharedGate, read: &Mutex<Vec<PathBuf>>) -> Result<usize, String> {
        let auth = Config::load_auth(&self.config)
            .map_err(|e| format!("{}: {e}", self.config.display()))?
            .ok_or("the auth section was removed; authentication stays on until a restart")?;
        let (new, files) = self::gate(&auth).map_err(|e| e.to_string())?;
        let keys = new.verifier.key_count();
        gate.replace(new);
        *read.lock() = files;
        Ok(keys)
    }

    /// Reloads what is configured, counting and logging each outcome.
    fn reload(&self, on_signal: bool) {
        let mut outcomes = Vec::new();
        if let Some((gate, read)) = &self.auth {
            let result = self.reload_auth(gate, read).map(|keys| format!("{keys} keys"));
            outcomes.push(("auth", result));
        }
        if let Some(cert) = &self.cert {
            outcomes.push((
                "tls",
                cert.reload().map(|()| "certificate".into()).map_err(|e| e.to_string()),
            ));
        }
        for (what, result) in outcomes {
            let label = if result.is_ok() { "ok" } else { "error" };
            self.metrics.reloads.with_label_values(&[what, label]).inc();
            match result {
                Ok(loaded) => tracing::info!(what, loaded, on_signal, "reloaded"),
                Err(e) => tracing::error!(what, error = %e, "reload failed; what was in force stays"),
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; files are still polled");
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
            self.reload(asked);
            seen = self.fingerprint();
        }
    }
}

/// SIGHUP where nothing can be reloaded (the config has no `auth` or `tls` section, or was not
/// read from a file): each one is logged with why it changes nothing, until `shutdown`.
/// (Unhandled, SIGHUP would stop the process; `app` also ignores it until this listens.)
pub async fn log_hangups(why: &'static str, mut shutdown: ShutdownWatch) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; it is ignored");
            return;
        }
    };
    loop {
        tokio::select! {
            Some(()) = hangup.recv() => tracing::warn!(why, "SIGHUP: nothing to reload"),
            _ = shutdown.changed() => return,
        }
    }
}

/// The client authentication and authorization of an `auth` section, and the files it read
/// (its keys' secrets and statements may live in files: see [`AuthConfig::load`]).
pub fn gate(auth: &AuthConfig) -> Result<(Gate, Vec<PathBuf>), ConfigError> {
    let rules = auth.load()?;
    let gate = Gate {
        verifier: Verifier::new(AuthOptions {
            region: auth.region.clone(),
            max_skew: Duration::from_secs(auth.max_skew_seconds),
            keys: rules.keys,
        }),
        policy: Policy {
            statements: rules.policy,
        },
    };
    Ok((gate, rules.files))
}
