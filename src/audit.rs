//! The audit log: one JSON line per request, written by a thread of its own so that the
//! request path never waits on it. Requests hand their [`Record`] to a bounded queue; when the
//! queue is full the record is dropped and counted (`shardcache_audit_dropped_total`), never
//! waited for. The writer drains the queue every 50 ms (sleeping in between, so that queueing
//! never wakes it), writes and flushes, and rotates a file by size.
//!
//! It owns its file and thread; it uses `types` and `metrics`, and must not reach the request
//! path beyond the [`Record`] it is handed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::Duration;

use prometheus::IntCounter;
use serde::Serialize;

/// Which requests are logged besides denials, which always are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditLevel {
    /// Every request.
    All,
    /// Writes (every method but GET and HEAD) and denials.
    #[default]
    Writes,
    /// Denials only.
    Denials,
}

/// Where the lines go.
#[derive(Clone, Debug)]
pub enum Sink {
    /// Standard output, beside the logs (each line carries `"log":"audit"`).
    Stdout,
    /// A file, rotated to `path.1` ... `path.<keep>` once it reaches `max_bytes`.
    File {
        /// The live file.
        path: PathBuf,
        /// Size at which it is rotated.
        max_bytes: u64,
        /// Rotated files kept.
        keep: u32,
    },
}

/// Audit settings, from the `audit` section.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// What is logged.
    pub level: AuditLevel,
    /// Where.
    pub sink: Sink,
    /// Records waiting to be written before new ones are dropped.
    pub queue: usize,
}

/// One request, as the audit log records it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Record {
    /// Always `audit`, to tell the line from the logs on a shared stream.
    pub log: &'static str,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// The request id (`x-amz-request-id` of the answer).
    pub request_id: String,
    /// The principal, or `anonymous`.
    pub principal: String,
    /// The client's address.
    pub source: Option<String>,
    /// The S3 operation.
    pub operation: &'static str,
    /// HTTP method.
    pub method: String,
    /// The bucket as the client named it.
    pub bucket: Option<String>,
    /// The key.
    pub key: Option<String>,
    /// The `Range` header.
    pub range: Option<String>,
    /// The ETag of what was served.
    pub etag: Option<String>,
    /// The version id of what was served.
    pub version_id: Option<String>,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// Where the answer came from (`memory_hit`, `miss`, `passthrough`, ...).
    pub cache: &'static str,
    /// HTTP status (0: the connection closed before an answer).
    pub status: u16,
    /// The S3 error code shardcache answered with, if any.
    pub error: Option<&'static str>,
    /// Refused by signature checks or the policy.
    pub denied: bool,
    /// Milliseconds from the request to its last byte.
    pub latency_ms: f64,
    /// The training job, from `x-shardcache-job`.
    pub job: Option<String>,
}

enum Msg {
    Line(Box<Record>),
    Flush(SyncSender<()>),
}

/// The audit log's front end: cheap to call from any request.
pub struct Audit {
    level: AuditLevel,
    tx: SyncSender<Msg>,
    dropped: IntCounter,
}

impl Audit {
    /// Opens the sink and starts the writer thread.
    pub fn start(opts: AuditOptions, dropped: IntCounter) -> std::io::Result<Self> {
        let out = Output::open(opts.sink)?;
        let (tx, rx) = sync_channel(opts.queue.max(1));
        std::thread::Builder::new()
            .name("shardcache-audit".into())
            .spawn(move || write_loop(rx, out))?;
        Ok(Self {
            level: opts.level,
            tx,
            dropped,
        })
    }

    /// Whether a request is logged: denials always; writes unless only denials are; the rest
    /// with `all`.
    pub fn wants(&self, write: bool, denied: bool) -> bool {
        denied
            || match self.level {
                AuditLevel::All => true,
                AuditLevel::Writes => write,
                AuditLevel::Denials => false,
            }
    }

    /// Queues a record; drops and counts it if the queue is full.
    pub fn record(&self, r: Record) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(Msg::Line(Box::new(r))) {
            self.dropped.inc();
        }
    }

    /// Waits (at most `within`) until every record queued so far is written and flushed.
    pub fn flush(&self, within: Duration) -> bool {
        let (ack, done) = sync_channel(1);
        let sent = self.tx.send(Msg::Flush(ack)).is_ok();
        sent && done.recv_timeout(within).is_ok()
    }
}

/// The writer's end of the sink.
struct Output {
    sink: Sink,
    out: BufWriter<Box<dyn Write + Send>>,
    written: u64,
}

impl Output {
    fn open(sink: Sink) -> std::io::Result<Self> {
        let (out, written): (Box<dyn Write + Send>, u64) = match &sink {
            Sink::Stdout => (Box::new(std::io::stdout()), 0),
            Sink::File { path, .. } => {
                let f = append(path)?;
                let len = f.metadata()?.len();
                (Box::new(f), len)
            }
        };
        Ok(Self {
            sink,
            out: BufWriter::with_capacity(64 << 10, out),
            written,
        })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if let Sink::File { path, max_bytes, keep } = &self.sink {
            if self.written > 0 && self.written + line.len() as u64 > *max_bytes {
                self.out.flush()?;
                rotate(path, *keep)?;
                *self.out.get_mut() = Box::new(append(path)?);
                self.written = 0;
            }
        }
        self.out.write_all(line)?;
        self.written += line.len() as u64;
        Ok(())
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `path.<keep-1>` -> `path.<keep>`, ..., `path` -> `path.1`.
fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    for n in (1..keep).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, numbered(1))
}

/// How often the writer wakes to drain the queue and flush. The writer sleeps between rounds
/// rather than waiting on the queue, so that queueing a record never has to wake a thread (a
/// wake-up per request costs more than the record itself).
const DRAIN_EVERY: Duration = Duration::from_millis(50);

fn write_loop(rx: Receiver<Msg>, mut out: Output) {
    let mut line = Vec::with_capacity(512);
    let mut failing = false;
    loop {
        std::thread::sleep(DRAIN_EVERY);
        let mut acks = Vec::new();
        let disconnected = loop {
            match rx.try_recv() {
                Ok(Msg::Line(record)) => {
                    line.clear();
                    serde_json::to_writer(&mut line, &record).expect("a record always serializes");
                    line.push(b'\n');
                    match out.write(&line) {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            tracing::error!(error = %e, "cannot write the audit log");
                        }
                        Err(_) => {}
                    }
                }
                Ok(Msg::Flush(ack)) => acks.push(ack),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        let _ = out.out.flush();
        for ack in acks {
            let _ = ack.send(());
        }
        if disconnected {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> Record {
        Record {
            log: "audit",
            request_id: format!("r{i}"),
            principal: "p".into(),
            operation: "GetObject",
            ..Default::default()
        }
    }

    #[test]
    fn levels_keep_denials_always() {
        let counter = IntCounter::new("t", "t").unwrap();
        let opts = |level| AuditOptions {
            level,
            sink: Sink::Stdout,
            queue: 1,
        };
        let all = Audit::start(opts(AuditLevel::All), counter.clone()).unwrap();
        let writes = Audit::start(opts(AuditLevel::Writes), counter.clone()).unwrap();
        let denials = Audit::start(opts(AuditLevel::Denials), counter).unwrap();
        for (a, read, write) in [(&all, true, true), (&writes, false, true), (&denials, false, false)] {
            assert_eq!((a.wants(false, false), a.wants(true, false)), (read, write));
            assert!(a.wants(false, true), "denials are always logged");
        }
    }

    #[test]
    fn files_rotate_by_size_and_keep_a_bounded_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let counter = IntCounter::new("t", "t").unwrap();
        let opts = AuditOptions {
            level: AuditLevel::All,
            sink: Sink::File {
                path: path.clone(),
                max_bytes: 2000,
                keep: 2,
            },
            queue: 10_000,
        };
        let audit = Audit::start(opts, counter.clone()).unwrap();
        for i in 0..200 {
            audit.record(record(i));
        }
        assert!(audit.flush(Duration::from_secs(5)));
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, ["audit.log", "audit.log.1", "audit.log.2"]);
        for f in &files {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.len() <= 2000, "{f}: {} bytes", text.len());
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["log"], "audit");
            }
        }
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.contains("\"request_id\":\"r199\""), "{last}");
        assert_eq!(counter.get(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_never_blocks() {
        // A writer that cannot keep up: a sink whose writes block until released.
        let counter = IntCounter::new("t", "t").unwrap();
        let (tx, rx) = sync_channel(1);
        let audit = Audit {
            level: AuditLevel::All,
            tx,
            dropped: counter.clone(),
        };
        let start = std::time::Instant::now();
        for i in 0..1000 {
            audit.record(record(i));
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(counter.get(), 999, "one queued, the rest dropped and counted");
        drop(rx);
    }
}
