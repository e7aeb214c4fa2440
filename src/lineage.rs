//! Data lineage: which object versions each training job read, kept durably on local disk so
//! that a model can be traced to the exact data it was trained on.
//!
//! Reads are queued from the request path (never waited for: a full queue drops and counts) to
//! a writer thread that merges them in memory (a hot loop over the same shards becomes one row
//! per shard) and commits them to a [redb](https://docs.rs/redb) database once a second. redb is pure Rust (no C toolchain, one small crate), crash-safe and
//! transactional, and its readers do not block the writer: the manifest of a job is read
//! while reads keep being recorded.
//!
//! Tables: `reads` maps (job, bucket, key, ETag) to (version id, bytes, reads, first and last
//! read in ms since the epoch); `jobs` maps a job to its last read. Retention drops jobs whose
//! last read is older than `retention`, and, past `max_bytes` of file, the jobs read longest
//! ago (their pages are reused, so the file stops growing).
//!
//! It owns its database and thread; it uses `types` and `metrics`, and must not reach the request
//! path beyond the reads it is handed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;

/// (job, bucket, key, ETag).
type ReadKey<'a> = (&'a str, &'a str, &'a str, &'a str);
/// (version id, bytes, reads, first ms, last ms).
type ReadValue<'a> = (&'a str, u64, u64, u64, u64);
/// Every object version each job read.
const READS: TableDefinition<ReadKey, ReadValue> = TableDefinition::new("reads");
/// job -> last read, ms.
const JOBS: TableDefinition<&str, u64> = TableDefinition::new("jobs");

/// Distinct object versions merged in memory before a commit is forced.
const BATCH: usize = 16_384;
/// How long a read waits in memory before it is committed.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// How often the writer wakes to drain the queue.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Lineage settings, from the `lineage` section.
#[derive(Clone, Debug)]
pub struct LineageOptions {
    /// The database file.
    pub path: PathBuf,
    /// Jobs whose last read is older are forgotten.
    pub retention: Duration,
    /// File size past which the jobs read longest ago are forgotten.
    pub max_bytes: u64,
    /// Reads waiting for the writer before new ones are dropped.
    pub queue: usize,
}

/// One object read by a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The job.
    pub job: String,
    /// The bucket as the client named it.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The ETag served.
    pub etag: String,
    /// The version id served (empty when the upstream has none).
    pub version_id: String,
    /// Body bytes sent.
    pub bytes: u64,
    /// When, in ms since the epoch.
    pub at_ms: u64,
}

/// A job's manifest line: one object version and how it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// ETag.
    pub etag: String,
    /// Version id, if the upstream has versions.
    pub version_id: Option<String>,
    /// Bytes read, over every read.
    pub bytes: u64,
    /// Requests that read it.
    pub reads: u64,
    /// First read, RFC 3339.
    pub first_read: String,
    /// Last read, RFC 3339.
    pub last_read: String,
}

/// A lineage database that cannot be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("lineage database {path}: {source}")]
pub struct LineageError {
    path: PathBuf,
    source: redb::Error,
}

enum Msg {
    Read(Read),
    Flush(SyncSender<()>),
}

/// The lineage recorder and its database.
pub struct Lineage {
    path: PathBuf,
    db: Arc<Database>,
    /// `None` once dropping: the writer then drains, commits and ends.
    tx: Option<SyncSender<Msg>>,
    writer: Option<std::thread::JoinHandle<()>>,
    dropped: IntCounter,
}

impl Drop for Lineage {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Lineage {
    /// Opens (or creates) the database and starts the writer thread.
    pub fn open(opts: LineageOptions, dropped: IntCounter) -> Result<Self, LineageError> {
        let fail = |source: redb::Error| LineageError {
            path: opts.path.clone(),
            source,
        };
        let db = Arc::new(Database::create(&opts.path).map_err(|e| fail(e.into()))?);
        let txn = db.begin_write().map_err(|e| fail(e.into()))?;
        txn.open_table(READS).map_err(|e| fail(e.into()))?;
        txn.open_table(JOBS).map_err(|e| fail(e.into()))?;
        txn.commit().map_err(|e| fail(e.into()))?;
        let (tx, rx) = sync_channel(opts.queue.max(1));
        let writer = Writer {
            db: db.clone(),
            opts: opts.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("shardcache-lineage".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| fail(redb::StorageError::from(e).into()))?;
        Ok(Self {
            path: opts.path,
            db,
            tx: Some(tx),
            writer: Some(writer),
            dropped,
        })
    }

    /// Queues a read; drops and counts it if the writer is behind.
    pub fn record(&self, read: Read) {
        if self.tx.as_ref().is_none_or(|tx| tx.try_send(Msg::Read(read)).is_err()) {
            self.dropped.inc();
        }
    }

    /// Waits (at most `within`) until every read queued so far is committed.
    pub fn flush(&self, within: Duration) -> bool {
        let (ack, done) = sync_channel(1);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(Msg::Flush(ack)).is_ok());
        sent && done.recv_timeout(within).is_ok()
    }

    /// Every object version `job` read, by bucket and key.
    pub fn manifest(&self, job: &str) -> Result<Vec<Entry>, LineageError> {
        let fail = |source: redb::Error| LineageError {
            path: self.path.clone(),
            source,
        };
        let txn = self.db.begin_read().map_err(|e| fail(e.into()))?;
        let table = txn.open_table(READS).map_err(|e| fail(e.into()))?;
        let mut out = Vec::new();
        for row in table.range((job, "", "", "")..).map_err(|e| fail(e.into()))? {
            let (k, v) = row.map_err(|e| fail(e.into()))?;
            let (row_job, bucket, key, etag) = k.value();
            if row_job != job {
                break;
            }
            let (version, bytes, reads, first, last) = v.value();
            let time = |ms: u64| crate::types::rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
            out.push(Entry {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                etag: etag.to_owned(),
                version_id: Some(version.to_owned()).filter(|v| !v.is_empty()),
                bytes,
                reads,
                first_read: time(first),
                last_read: time(last),
            });
        }
        Ok(out)
    }
}

/// A manifest as CSV, with a header line.
pub fn to_csv(entries: &[Entry]) -> String {
    let field = |s: &str| match s.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")),
        false => s.to_owned(),
    };
    let mut out = String::from("bucket,key,etag,version_id,bytes,reads,first_read,last_read\n");
    for e in entries {
        let line = [
            field(&e.bucket),
            field(&e.key),
            field(&e.etag),
            field(e.version_id.as_deref().unwrap_or("")),
            e.bytes.to_string(),
            e.reads.to_string(),
            e.first_read.clone(),
            e.last_read.clone(),
        ];
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

struct Writer {
    db: Arc<Database>,
    opts: LineageOptions,
}

/// Reads of one object version by one job, merged in memory until the next commit.
struct Pending {
    version_id: String,
    bytes: u64,
    reads: u64,
    first: u64,
    last: u64,
}

/// (job, bucket, key, ETag).
type PendingKey = (String, String, String, String);

impl Writer {
    fn run(self, rx: Receiver<Msg>) {
        let mut last_retention = Instant::now();
        let mut last_commit = Instant::now();
        let mut failing = false;
        let mut pending: HashMap<PendingKey, Pending> = HashMap::new();
        loop {
            // Sleep rather than wait on the queue: queueing a read then never wakes a thread.
            std::thread::sleep(DRAIN_EVERY);
            let mut acks = Vec::new();
            let disconnected = loop {
                match rx.try_recv() {
                    Ok(Msg::Read(r)) => {
                        let entry = pending
                            .entry((r.job, r.bucket, r.key, r.etag))
                            .or_insert_with(|| Pending {
                                version_id: r.version_id,
                                bytes: 0,
                                reads: 0,
                                first: r.at_ms,
                                last: r.at_ms,
                            });
                        entry.bytes += r.bytes;
                        entry.reads += 1;
                        entry.first = entry.first.min(r.at_ms);
                        entry.last = entry.last.max(r.at_ms);
                    }
                    Ok(Msg::Flush(ack)) => acks.push(ack),
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            let due =
                disconnected || !acks.is_empty() || pending.len() >= BATCH || last_commit.elapsed() >= COMMIT_EVERY;
            let retain = last_retention.elapsed() >= RETENTION_EVERY;
            if !due && !retain {
                continue;
            }
            let mut result = Ok(());
            if due {
                last_commit = Instant::now();
                result = self.merge(std::mem::take(&mut pending));
            }
            if retain {
                last_retention = Instant::now();
                result = result.and_then(|()| self.retain());
            }
            match result {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(path = %self.opts.path.display(), error = %e, "cannot record lineage");
                }
                Err(_) => {}
            }
            for ack in acks {
                let _ = ack.send(());
            }
            if disconnected {
                return;
            }
        }
    }

    /// Merges `reads` into the tables in one transaction.
    fn merge(&self, reads: HashMap<PendingKey, Pending>) -> Result<(), redb::Error> {
        if reads.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(READS)?;
            let mut jobs = txn.open_table(JOBS)?;
            for ((job, bucket, key, etag), p) in &reads {
                let row = (job.as_str(), bucket.as_str(), key.as_str(), etag.as_str());
                let merged = match table.get(row)? {
                    Some(old) => {
                        let (_, bytes, count, first, last) = old.value();
                        (bytes + p.bytes, count + p.reads, first.min(p.first), last.max(p.last))
                    }
                    None => (p.bytes, p.reads, p.first, p.last),
                };
                table.insert(row, (p.version_id.as_str(), merged.0, merged.1, merged.2, merged.3))?;
                let last = jobs.get(job.as_str())?.map_or(0, |v| v.value());
                jobs.insert(job.as_str(), last.max(p.last))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Forgets jobs past `retention`, then, while the file is over `max_bytes`, the jobs read
    /// longest ago (a tenth at a time).
    fn retain(&self) -> Result<(), redb::Error> {
        let cutoff = now_ms().saturating_sub(self.opts.retention.as_millis() as u64);
        let mut by_age: Vec<(u64, String)> = {
            let txn = self.db.begin_read()?;
            let jobs = txn.open_table(JOBS)?;
            let mut all = Vec::new();
            for row in jobs.iter()? {
                let (job, last) = row?;
                all.push((last.value(), job.value().to_owned()));
            }
            all
        };
        by_age.sort();
        let expired = by_age.iter().take_while(|(last, _)| *last < cutoff).count();
        let mut forget: Vec<String> = by_age.drain(..expired).map(|(_, j)| j).collect();
        if file_len(&self.opts.path) > self.opts.max_bytes {
            let tenth = by_age.len().div_ceil(10);
            forget.extend(by_age.drain(..tenth).map(|(_, j)| j));
        }
        if forget.is_empty() {
            return Ok(());
        }
        let forget: std::collections::HashSet<String> = forget.into_iter().collect();
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(READS)?;
            table.retain(|(job, ..), _| !forget.contains(job))?;
            let mut jobs = txn.open_table(JOBS)?;
            jobs.retain(|job, _| !forget.contains(job))?;
        }
        txn.commit()?;
        tracing::info!(jobs = forget.len(), "lineage retention forgot jobs");
        Ok(())
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(job: &str, key: &str, etag: &str, bytes: u64, at_ms: u64) -> Read {
        Read {
            job: job.into(),
            bucket: "ds".into(),
            key: key.into(),
            etag: etag.into(),
            version_id: String::new(),
            bytes,
            at_ms,
        }
    }

    fn open(path: &Path, retention: Duration) -> Lineage {
        let opts = LineageOptions {
            path: path.to_owned(),
            retention,
            max_bytes: 1 << 30,
            queue: 1000,
        };
        Lineage::open(opts, IntCounter::new("t", "t").unwrap()).unwrap()
    }

    #[test]
    fn reads_merge_per_object_version_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lineage.redb");
        let day = Duration::from_secs(86_400);
        let t = now_ms();
        {
            let l = open(&path, day);
            l.record(read("job-a", "shard-1", "\"e1\"", 100, t));
            l.record(read("job-a", "shard-1", "\"e1\"", 50, t + 5));
            l.record(read("job-a", "shard-1", "\"e2\"", 10, t + 9));
            l.record(read("job-a", "shard,2", "\"e3\"", 7, t + 1));
            l.record(read("job-ab", "other", "\"e4\"", 1, t));
            assert!(l.flush(Duration::from_secs(5)));
        }
        let l = open(&path, day);
        let m = l.manifest("job-a").unwrap();
        let rows: Vec<_> = m.iter().map(|e| (&*e.key, &*e.etag, e.bytes, e.reads)).collect();
        assert_eq!(
            rows,
            [
                ("shard,2", "\"e3\"", 7, 1),
                ("shard-1", "\"e1\"", 150, 2),
                ("shard-1", "\"e2\"", 10, 1)
            ]
        );
        assert!(m[1].first_read < m[1].last_read);
        let csv = to_csv(&m);
        assert!(csv.starts_with("bucket,key,etag,version_id,bytes,reads,first_read,last_read\n"));
        assert!(csv.contains("ds,\"shard,2\",\"\"\"e3\"\"\",,7,1,"), "{csv}");
        assert_eq!(l.manifest("job").unwrap(), []);
    }

    #[test]
    fn retention_forgets_old_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let l = open(&dir.path().join("l.redb"), Duration::from_secs(3600));
        l.record(read("old", "k", "\"e\"", 1, now_ms() - 7_200_000));
        l.record(read("new", "k", "\"e\"", 1, now_ms()));
        assert!(l.flush(Duration::from_secs(5)));
        let writer = Writer {
            db: l.db.clone(),
            opts: LineageOptions {
                path: dir.path().join("l.redb"),
                retention: Duration::from_secs(3600),
                max_bytes: 1 << 30,
                queue: 1,
            },
        };
        writer.retain().unwrap();
        assert_eq!(l.manifest("old").unwrap(), []);
        assert_eq!(l.manifest("new").unwrap().len(), 1);
    }
}
