//! A local directory as a read-only S3 origin: each top-level folder is a bucket, each file
//! below it an object whose key is its relative path.
//!
//! ETags are derived from the file's identity and every time that moves when its content can
//! have changed: inode, size, and mtime and ctime to the nanosecond. A file replaced with the same
//! size and a preserved mtime (`rsync -a`, `cp -p`) still gets a new ctime, or a new inode when it
//! was renamed into place, so its old cached chunks are never mixed with new ones. A read checks
//! the ETag of the file it opened before its first byte and again after its last, so a file
//! rewritten in place while being read fails the read instead of being served mixed.

use std::fs::Metadata;
use std::io::SeekFrom;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Body, Origin, OriginBody, OriginError};
use shardcache_s3::xml::{ListPage, ListedObject};
use shardcache_types::{ETag, ObjectMeta};

/// Bytes per read from a file.
const READ_PIECE: usize = 256 << 10;

/// A local-directory origin.
pub struct FsOrigin {
    root: PathBuf,
}

/// Parameters of a ListObjects (v1 or v2) call.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    /// Only keys starting with this.
    pub prefix: String,
    /// Group keys by the part up to this after the prefix.
    pub delimiter: Option<String>,
    /// Page size (at most 1000).
    pub max_keys: usize,
    /// Resume after this key (marker, continuation token or start-after).
    pub after: Option<String>,
}

impl FsOrigin {
    /// An origin serving `root` (resolved once, so containment checks compare real paths).
    pub fn new(root: PathBuf) -> Self {
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        Self { root }
    }

    /// `path` with every symbolic link resolved, if it exists and stays inside the root;
    /// otherwise `absent`. A link out of the root (`passwd -> /etc/passwd`, a bucket folder
    /// linked to `/etc`) is as absent as a missing file.
    async fn inside_root(&self, path: &Path, absent: OriginError) -> Result<PathBuf, OriginError> {
        match tokio::fs::canonicalize(path).await {
            Ok(real) if real.starts_with(&self.root) && real != self.root => Ok(real),
            Ok(_) => Err(absent),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Err(absent)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The directory of `bucket`, if it exists inside the root.
    async fn bucket_dir(&self, bucket: &str) -> Result<PathBuf, OriginError> {
        if bucket.starts_with('.') {
            return Err(OriginError::NoSuchBucket);
        }
        let dir = self
            .inside_root(&self.root.join(bucket), OriginError::NoSuchBucket)
            .await?;
        match tokio::fs::metadata(&dir).await {
            Ok(md) if md.is_dir() => Ok(dir),
            _ => Err(OriginError::NoSuchBucket),
        }
    }

    /// The file of `bucket/key`, resolved inside the root. Keys that cannot name a file below
    /// the bucket (empty, `.` or `..` segments) are simply absent.
    async fn object_path(&self, bucket: &str, key: &str) -> Result<PathBuf, OriginError> {
        let dir = self.bucket_dir(bucket).await?;
        if key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") || key.contains('\0') {
            return Err(OriginError::NoSuchKey);
        }
        self.inside_root(&dir.join(key), OriginError::NoSuchKey).await
    }

    async fn stat(path: &Path) -> Result<ObjectMeta, OriginError> {
        let md = match tokio::fs::metadata(path).await {
            Ok(md) if md.is_file() => md,
            Ok(_) => return Err(OriginError::NoSuchKey),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OriginError::NoSuchKey),
            Err(e) => return Err(e.into()),
        };
        Ok(ObjectMeta {
            size: md.len(),
            etag: etag(&md),
            last_modified: md.modified()?,
            content_type: Some("application/octet-stream".to_owned()),
            version_id: None,
            headers: Vec::new(),
            // A local file has no stored checksums; that is known, not missing.
            checksums: Some(Vec::new()),
        })
    }

    /// The buckets (top-level folders) with their modification times, sorted.
    pub async fn list_buckets(&self) -> Result<Vec<(String, SystemTime)>, OriginError> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.root).await?;
        while let Some(entry) = dir.next_entry().await? {
            let md = entry.metadata().await?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if md.is_dir() && shardcache_types::BucketName::parse(&name).is_some() && !name.starts_with('.') {
                out.push((name, md.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Whether `bucket` exists.
    pub async fn has_bucket(&self, bucket: &str) -> bool {
        self.bucket_dir(bucket).await.is_ok()
    }

    /// One page of a listing of `bucket` (the version-specific fields are the caller's).
    pub async fn list_objects(&self, bucket: &str, params: ListParams) -> Result<ListPage, OriginError> {
        let dir = self.bucket_dir(bucket).await?;
        let files = tokio::task::spawn_blocking(move || walk(&dir))
            .await
            .map_err(|e| OriginError::Io(std::io::Error::other(e)))??;
        let mut page = ListPage {
            bucket: bucket.to_owned(),
            prefix: params.prefix.clone(),
            max_keys: params.max_keys,
            ..Default::default()
        };
        page.delimiter = params.delimiter.clone();
        let mut last_prefix: Option<String> = None;
        for (key, md) in files {
            if !key.starts_with(&params.prefix) || params.after.as_deref().is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            let rolled = params.delimiter.as_deref().filter(|d| !d.is_empty()).and_then(|d| {
                let rest = &key[params.prefix.len()..];
                rest.find(d)
                    .map(|i| key[..params.prefix.len() + i + d.len()].to_owned())
            });
            if rolled.is_some() && rolled == last_prefix {
                continue;
            }
            if page.contents.len() + page.common_prefixes.len() == params.max_keys {
                page.next = Some(last_key(&page));
                break;
            }
            match rolled {
                Some(p) => {
                    page.common_prefixes.push(p.clone());
                    last_prefix = Some(p);
                }
                None => page.contents.push(ListedObject {
                    etag: etag(&md).as_str().to_owned(),
                    key,
                    size: md.len(),
                    last_modified: md.modified()?,
                }),
            }
        }
        Ok(page)
    }
}

/// The resume point of a truncated page: the greatest key or prefix it holds. Resuming after a
/// common prefix skips every key under it.
fn last_key(page: &ListPage) -> String {
    let key = page.contents.last().map(|o| o.key.clone()).unwrap_or_default();
    let prefix = page
        .common_prefixes
        .last()
        .map(|p| format!("{p}\u{10FFFF}"))
        .unwrap_or_default();
    key.max(prefix)
}

/// The version of a file: `"<inode>-<size>-<mtime ns>-<ctime ns>"` in hex. ctime cannot be set
/// from user space, so a content change always moves it.
fn etag(md: &Metadata) -> ETag {
    let nanos = |secs: i64, ns: i64| (i128::from(secs) * 1_000_000_000 + i128::from(ns)) as u128;
    let (mtime, ctime) = (nanos(md.mtime(), md.mtime_nsec()), nanos(md.ctime(), md.ctime_nsec()));
    let tag = format!("\"{:x}-{:x}-{mtime:x}-{ctime:x}\"", md.ino(), md.len());
    ETag::parse(&tag).expect("hex digits form a valid etag")
}

/// Every regular file under `dir` as (key, metadata), sorted by key (S3 lists in UTF-8 binary
/// order, which is byte order).
fn walk(dir: &Path) -> std::io::Result<Vec<(String, Metadata)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let md = entry.metadata()?;
            if md.is_dir() {
                stack.push(entry.path());
            } else if md.is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(dir)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                if let Some(key) = rel.to_str() {
                    out.push((key.to_owned(), md));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[async_trait]
impl Origin for FsOrigin {
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, OriginError> {
        Self::stat(&self.object_path(bucket, key).await?).await
    }

    async fn read(&self, bucket: &str, key: &str, span: Range<u64>, etag: &ETag) -> Result<Body, OriginError> {
        let path = self.object_path(bucket, key).await?;
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OriginError::NoSuchKey,
            _ => e.into(),
        })?;
        if &self::etag(&file.metadata().await?) != etag {
            return Err(OriginError::Changed);
        }
        file.seek(SeekFrom::Start(span.start)).await?;
        let remaining = span.end - span.start;
        Ok(Box::new(FileBody {
            file,
            etag: etag.clone(),
            remaining,
            buf: vec![0; READ_PIECE.min(remaining as usize)],
        }))
    }
}

/// A span of a file, read a piece at a time into one reused buffer.
struct FileBody {
    file: tokio::fs::File,
    /// The version the read is pinned to, checked again once the span is read.
    etag: ETag,
    remaining: u64,
    buf: Vec<u8>,
}

#[async_trait]
impl OriginBody for FileBody {
    async fn next(&mut self) -> Result<Option<&[u8]>, OriginError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let want = self
            .buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut self.buf[..want]).await?;
        if n == 0 {
            return Err(OriginError::Changed);
        }
        self.remaining -= n as u64;
        // A file rewritten in place while it was read may have given us bytes of both versions:
        // its ctime has moved, so the last piece is withheld and the fill fails.
        if self.remaining == 0 && etag(&self.file.metadata().await?) != self.etag {
            return Err(OriginError::Changed);
        }
        Ok(Some(&self.buf[..n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> (tempfile::TempDir, FsOrigin) {
        let dir = tempfile::tempdir().unwrap();
        for key in ["b/a.txt", "b/d/1", "b/d/2", "b/e/x/y", "b/z"] {
            let p = dir.path().join(key);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, key).unwrap();
        }
        let o = FsOrigin::new(dir.path().to_path_buf());
        (dir, o)
    }

    #[tokio::test]
    async fn traversal_keys_are_absent() {
        let (_dir, o) = origin();
        for key in ["../b/z", "d/../z", "d//1", "./z"] {
            assert!(matches!(o.head("b", key).await, Err(OriginError::NoSuchKey)), "{key}");
        }
        assert!(matches!(o.head("nope", "z").await, Err(OriginError::NoSuchBucket)));
        assert!(matches!(o.head("b", "d").await, Err(OriginError::NoSuchKey)));
    }

    #[tokio::test]
    async fn symlinks_out_of_the_root_are_absent() {
        let (dir, o) = origin();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "root:x:0:0").unwrap();
        let link = |target: &Path, at: &str| std::os::unix::fs::symlink(target, dir.path().join(at)).unwrap();
        link(&outside.path().join("passwd"), "b/passwd-link");
        link(outside.path(), "b/outside-dir");
        link(outside.path(), "etc-bucket");
        link(&dir.path().join("b/d/1"), "b/inside-link");
        assert!(matches!(o.head("b", "passwd-link").await, Err(OriginError::NoSuchKey)));
        assert!(matches!(
            o.head("b", "outside-dir/passwd").await,
            Err(OriginError::NoSuchKey)
        ));
        assert!(matches!(
            o.head("etc-bucket", "passwd").await,
            Err(OriginError::NoSuchBucket)
        ));
        assert!(!o.has_bucket("etc-bucket").await);
        let etag = ETag::parse("\"x\"").unwrap();
        assert!(matches!(
            o.read("b", "passwd-link", 0..1, &etag).await,
            Err(OriginError::NoSuchKey)
        ));
        assert!(matches!(
            o.list_objects(
                "etc-bucket",
                ListParams {
                    max_keys: 10,
                    ..Default::default()
                }
            )
            .await,
            Err(OriginError::NoSuchBucket)
        ));
        assert_eq!(
            o.head("b", "inside-link").await.unwrap().size,
            5,
            "a link within the root is served"
        );
    }

    #[tokio::test]
    async fn reads_are_pinned_to_the_etag() {
        let (_dir, o) = origin();
        let meta = o.head("b", "d/1").await.unwrap();
        let mut body = o.read("b", "d/1", 1..3, &meta.etag).await.unwrap();
        let mut read = Vec::new();
        while let Some(piece) = body.next().await.unwrap() {
            read.extend_from_slice(piece);
        }
        assert_eq!(read, b"/d");
        let other = ETag::parse("\"other\"").unwrap();
        assert!(matches!(
            o.read("b", "d/1", 0..1, &other).await,
            Err(OriginError::Changed)
        ));
    }

    #[tokio::test]
    async fn a_file_rewritten_with_its_size_and_mtime_kept_is_a_new_version() {
        let (dir, o) = origin();
        let path = dir.path().join("b/d/1");
        let old = o.head("b", "d/1").await.unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        // ctime ticks with the kernel's clock (a few ms at worst): step past it, as any real
        // rewrite after a read through the cache is.
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Rewritten in place (cp -p), then renamed into place (rsync -a): same size and mtime.
        for replace in [false, true] {
            if replace {
                let tmp = dir.path().join("b/d/.1.tmp");
                std::fs::write(&tmp, b"b/d/9").unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(&tmp)
                    .unwrap()
                    .set_modified(mtime)
                    .unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            } else {
                std::fs::write(&path, b"b/d/8").unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(mtime)
                    .unwrap();
            }
            let new = o.head("b", "d/1").await.unwrap();
            assert_eq!((new.size, new.last_modified), (old.size, old.last_modified));
            assert_ne!(new.etag, old.etag, "replace={replace}");
            assert!(matches!(
                o.read("b", "d/1", 0..1, &old.etag).await,
                Err(OriginError::Changed)
            ));
        }
    }

    #[tokio::test]
    async fn a_file_rewritten_while_read_fails_the_read() {
        let (dir, o) = origin();
        let meta = o.head("b", "d/1").await.unwrap();
        let mut body = o.read("b", "d/1", 0..5, &meta.etag).await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("b/d/1"), b"b/d/7").unwrap();
        assert!(matches!(body.next().await, Err(OriginError::Changed)));
    }

    #[tokio::test]
    async fn listings_group_by_delimiter_and_paginate() {
        let (_dir, o) = origin();
        let params = ListParams {
            delimiter: Some("/".into()),
            max_keys: 1000,
            ..Default::default()
        };
        let page = o.list_objects("b", params).await.unwrap();
        let keys: Vec<_> = page.contents.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["a.txt", "z"]);
        assert_eq!(page.common_prefixes, ["d/", "e/"]);

        let mut after = None;
        let mut seen = Vec::new();
        loop {
            let params = ListParams {
                delimiter: Some("/".into()),
                max_keys: 1,
                after: after.clone(),
                ..Default::default()
            };
            let page = o.list_objects("b", params).await.unwrap();
            seen.extend(
                page.contents
                    .iter()
                    .map(|c| c.key.clone())
                    .chain(page.common_prefixes.clone()),
            );
            match page.next {
                Some(t) => after = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, ["a.txt", "d/", "e/", "z"]);
    }
}
