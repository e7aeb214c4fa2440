//! One pass of `shardcache probe`: every sampled object read whole by a number of readers at
//! once, each on a connection it keeps (as S3 clients pool theirs), timing each answer's header.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::ops::{Bucket, Connection};

/// An object of the sample.
#[derive(Clone, Debug)]
pub struct Object {
    /// Its key.
    pub key: String,
    /// Its size, as listed.
    pub size: u64,
}

/// Counters a progress display reads while a pass runs.
#[derive(Default)]
pub struct Counters {
    /// Objects finished, read or failed.
    pub done: AtomicUsize,
    /// Body bytes received.
    pub bytes: AtomicU64,
}

/// What a pass read.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Objects read whole and right.
    pub objects: u64,
    /// Body bytes of the objects read (2xx answers).
    pub bytes: u64,
    /// GETs answered, whatever the status.
    pub requests: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Time to each 2xx answer's header.
    pub first_bytes: Vec<Duration>,
    /// Each object's ETag, in the sample's order (`None` where it failed).
    pub etags: Vec<Option<String>>,
    /// Objects that failed or came back wrong, with why.
    pub errors: Vec<String>,
}

/// Reads `objects` from `bucket` with `readers` readers. `deadline` bounds each wait for an
/// answer and for each piece of its body. With `expect`, each object's ETag must be the one
/// given (what the upstream answered directly): a different one is an error.
pub async fn run(
    bucket: &Bucket,
    objects: &[Object],
    readers: usize,
    deadline: Duration,
    expect: Option<&[Option<String>]>,
    counters: &Counters,
) -> Outcome {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let reader = || async {
        let mut conn = Connection::new(bucket.endpoint.clone());
        let mut read = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(object) = objects.get(i) else {
                return read;
            };
            let path = bucket.object_path(&object.key);
            let fetched = conn
                .get(&path, deadline, |n| {
                    counters.bytes.fetch_add(n, Ordering::Relaxed);
                })
                .await;
            counters.done.fetch_add(1, Ordering::Relaxed);
            read.push((i, fetched));
        }
    };
    let results = join_all((0..readers.max(1)).map(|_| reader())).await;
    let mut outcome = Outcome {
        elapsed: started.elapsed(),
        etags: vec![None; objects.len()],
        ..Outcome::default()
    };
    for (i, fetched) in results.into_iter().flatten() {
        let object = &objects[i];
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                outcome.errors.push(e);
                continue;
            }
        };
        outcome.requests += 1;
        if fetched.error.is_none() {
            outcome.bytes += fetched.bytes;
            outcome.first_bytes.push(fetched.first_byte);
        }
        let expected_etag = expect.and_then(|e| e[i].as_deref());
        let wrong = if let Some(body) = &fetched.error {
            Some(format!("HTTP {}: {}", fetched.status, body.trim()))
        } else if fetched.bytes != object.size {
            Some(format!("{} bytes of {}", fetched.bytes, object.size))
        } else if expected_etag.is_some_and(|e| fetched.etag.as_deref() != Some(e)) {
            Some(format!(
                "ETag {:?}, where the upstream answered {:?} (the object changed, or the bytes differ)",
                fetched.etag,
                expected_etag.unwrap_or_default()
            ))
        } else {
            None
        };
        match wrong {
            Some(why) => outcome.errors.push(format!("{}: {why}", object.key)),
            None => {
                outcome.objects += 1;
                outcome.etags[i] = fetched.etag;
            }
        }
    }
    outcome
}
