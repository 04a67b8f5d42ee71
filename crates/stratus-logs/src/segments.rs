//! Log records in append-only segment files: the single node's log table.
//!
//! Each app has a directory of segments, files named by the first id they
//! hold (`{id:016x}.log`). Records are appended to the app's open segment
//! as checksummed frames; a segment is sealed when it reaches its size or
//! age and never changes after. Retention deletes whole segments: the
//! oldest of an app beyond its budget, the oldest of all beyond the total,
//! any whose newest record is past the age limit. Nothing is rewritten,
//! and nothing here shares a lock or a connection with the store.
//!
//! Every segment has a summary in memory (ids, times, the functions it
//! holds, and a Bloom filter of its request ids) made from its frames at
//! start, so that a query reads only the segments that may hold what it
//! asks for. A frame cut short by a crash ends its segment: the next start
//! truncates it.
//!
//! Frame: `u32 body length`, `u32 CRC-32 of the body`, then the body: `i64
//! id`, `i64 ts_ms`, `u32 version`, `u8 stream`, and the strings function,
//! instance, request id, message and fields (JSON), each a `u32 length`
//! (`u32::MAX` for none) and its bytes; all little-endian.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stratus_store::{LogBudget, LogQuery, LogRecord, LogStream, Store, StoredLog, Trimmed};

use crate::table::{LogTable, TableError};
use crate::{Retention, now_ms};

const HEAD: usize = 8;
const NONE: u32 = u32::MAX;
/// A frame that declares a larger body is torn or corrupt.
const MAX_BODY: usize = 256 << 20;
/// Largest and smallest segment, whatever the budget.
const MAX_SEGMENT: u64 = 8 << 20;
const MIN_SEGMENT: u64 = 64 << 10;
/// Segments per budget: an app's log is trimmed in steps of about this
/// share of its budget.
const SEGMENTS_PER_BUDGET: u64 = 16;
/// An open segment is synced to the disk at most this long after a write.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// An open segment not written for this long gives back its descriptor.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// A segment is read in blocks of about this many bytes, each beginning
/// at a frame whose offset and id are kept in memory: a query for the
/// newest records reads the last blocks, one for records after an id
/// begins at the block that holds it.
const BLOCK: u64 = 64 << 10;
/// Bits of Bloom filter per request id, and probes per lookup: about one
/// false positive in a hundred.
const BLOOM_BITS: usize = 10;
const BLOOM_PROBES: u64 = 7;

/// How large and how old a segment grows before it is sealed.
#[derive(Debug, Clone, Copy)]
pub struct SegmentLimits {
    pub segment_bytes: u64,
    pub roll_after: Duration,
}

impl SegmentLimits {
    /// Segments small enough that a trim to `retention` takes off about a
    /// sixteenth of a budget at a time, and records at most about a
    /// sixteenth past their age.
    pub fn for_retention(retention: &Retention) -> SegmentLimits {
        let budget = retention.max_bytes_per_app.min(retention.max_bytes);
        SegmentLimits {
            segment_bytes: (budget / SEGMENTS_PER_BUDGET).clamp(MIN_SEGMENT, MAX_SEGMENT),
            roll_after: (retention.max_age / SEGMENTS_PER_BUDGET as u32)
                .clamp(Duration::from_secs(1), Duration::from_secs(3600)),
        }
    }
}

/// [`LogTable`] in segment files under one directory.
pub struct SegmentLogs {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    limits: SegmentLimits,
    state: Mutex<State>,
}

struct State {
    next_id: i64,
    total: u64,
    apps: BTreeMap<String, AppLog>,
}

struct AppLog {
    dir: PathBuf,
    sealed: VecDeque<Arc<Sealed>>,
    open: Option<Open>,
    bytes: u64,
}

/// What a segment holds, for deciding whether a query must read it.
#[derive(Debug, Clone)]
struct Span {
    first_id: i64,
    last_id: i64,
    min_ts: i64,
    max_ts: i64,
    records: u64,
}

impl Span {
    fn new(id: i64, ts: i64) -> Span {
        Span {
            first_id: id,
            last_id: id,
            min_ts: ts,
            max_ts: ts,
            records: 0,
        }
    }

    fn add(&mut self, id: i64, ts: i64) {
        self.last_id = id;
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        self.records += 1;
    }
}

/// Where a block begins, and the id of its first record.
#[derive(Debug, Clone, Copy)]
struct Mark {
    offset: u64,
    first_id: i64,
}

/// Adds a mark for a frame at `offset` if it begins a new block.
fn mark(marks: &mut Vec<Mark>, offset: u64, id: i64) {
    if marks.last().is_none_or(|m| offset >= m.offset + BLOCK) {
        marks.push(Mark {
            offset,
            first_id: id,
        });
    }
}

struct Sealed {
    path: PathBuf,
    bytes: u64,
    span: Span,
    marks: Vec<Mark>,
    functions: Vec<String>,
    requests: Bloom,
}

struct Open {
    path: PathBuf,
    /// `None` while idle: opened again for the next write.
    file: Option<File>,
    len: u64,
    span: Span,
    marks: Vec<Mark>,
    functions: HashSet<String>,
    requests: HashSet<u64>,
    /// When it was begun (for a segment found at start, its oldest
    /// record's time), for sealing by age.
    begun_ms: i64,
    /// Whether everything written is synced, and when it last was.
    synced: bool,
    synced_at: Instant,
    written: Instant,
}

/// A segment that may hold what a query asks for: the bytes to read.
struct View {
    path: PathBuf,
    len: u64,
    marks: Vec<Mark>,
}

impl SegmentLogs {
    /// Opens the segments under `dir` (made, readable by its owner only,
    /// if missing), truncating a frame that a crash cut short.
    pub fn open(dir: &Path, limits: SegmentLimits) -> Result<SegmentLogs, TableError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let io = |path: &Path| {
            let path = path.to_owned();
            move |err| TableError::Io { path, err }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let mut state = State {
            next_id: 1,
            total: 0,
            apps: BTreeMap::new(),
        };
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(app) = name.to_str().and_then(app_of_dir) else {
                tracing::warn!(path = %entry.path().display(), "not a log directory; left alone");
                continue;
            };
            let app_log = AppLog::load(entry.path())?;
            if let Some(last) = app_log.last_id() {
                state.next_id = state.next_id.max(last + 1);
            }
            state.total += app_log.bytes;
            state.apps.insert(app, app_log);
        }
        Ok(SegmentLogs {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                limits,
                state: Mutex::new(state),
            }),
        })
    }

    /// Stores records read from another table under the ids they had
    /// there, oldest first; those at or below an id already stored are
    /// skipped, so that an import cut short goes on where it stopped.
    pub async fn import(&self, records: Vec<StoredLog>) -> Result<(), TableError> {
        self.blocking(move |inner| {
            let mut state = inner.lock();
            let fresh: Vec<(i64, LogRecord)> = records
                .into_iter()
                .filter(|r| r.id >= state.next_id)
                .map(|r| (r.id, r.record))
                .collect();
            inner.write(&mut state, fresh)
        })
        .await
    }

    /// Moves the records of the store's own log table (kept there before
    /// segments) into segments under the ids they had, then has the store
    /// delete its copies in the background, a chunk at a time. Cut short,
    /// it goes on where it stopped at the next start. Returns how many
    /// records it moved.
    pub async fn take_over(&self, store: Arc<dyn Store>) -> Result<u64, TableError> {
        const PAGE: u32 = 10_000;
        let mut after = 0;
        let mut moved = 0;
        loop {
            let page = store
                .query_logs(LogQuery {
                    after_id: Some(after),
                    limit: PAGE,
                    ..LogQuery::default()
                })
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.id;
            moved += page.len() as u64;
            self.import(page).await?;
        }
        if moved > 0 {
            tracing::info!(
                records = moved,
                "log records moved from the database into log segments"
            );
            tokio::spawn(async move {
                let all = LogBudget {
                    total: 0,
                    per_app: 0,
                };
                if let Err(err) = store.trim_logs(i64::MAX, all).await {
                    tracing::warn!(%err, "cannot delete the log records moved out of the database");
                }
            });
        }
        Ok(moved)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, TableError> + Send + 'static,
    ) -> Result<T, TableError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|err| TableError::Io {
                path: self.inner.dir.clone(),
                err: std::io::Error::other(err.to_string()),
            })?
    }
}

#[async_trait]
impl LogTable for SegmentLogs {
    async fn append(&self, records: Vec<LogRecord>) -> Result<(), TableError> {
        self.blocking(move |inner| {
            let mut state = inner.lock();
            let first = state.next_id;
            let numbered = records
                .into_iter()
                .enumerate()
                .map(|(i, r)| (first + i as i64, r))
                .collect();
            inner.write(&mut state, numbered)
        })
        .await
    }

    async fn query(&self, query: LogQuery) -> Result<Vec<StoredLog>, TableError> {
        self.blocking(move |inner| inner.query(&query)).await
    }

    async fn trim(&self, before_ms: i64, budget: LogBudget) -> Result<Trimmed, TableError> {
        self.blocking(move |inner| Ok(inner.trim(before_ms, budget)))
            .await
    }

    async fn bytes(&self) -> Result<u64, TableError> {
        Ok(self.inner.lock().total)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `records`, numbered, to their apps' open segments.
    fn write(&self, state: &mut State, records: Vec<(i64, LogRecord)>) -> Result<(), TableError> {
        let Some(last) = records.last().map(|(id, _)| *id) else {
            return Ok(());
        };
        state.next_id = state.next_id.max(last + 1);
        let mut by_app: BTreeMap<String, Vec<(i64, LogRecord)>> = BTreeMap::new();
        for (id, record) in records {
            by_app
                .entry(record.app.clone())
                .or_default()
                .push((id, record));
        }
        let now = now_ms();
        let mut result = Ok(());
        for (app, records) in by_app {
            let app_log = state
                .apps
                .entry(app.clone())
                .or_insert_with(|| AppLog::new(self.dir.join(dir_of_app(&app))));
            let before = app_log.bytes;
            let written = app_log.write(&records, self.limits, now);
            state.total = state.total + app_log.bytes - before;
            // The other apps' records are stored even when one app's are not.
            if let Err(err) = written {
                result = Err(err);
            }
        }
        result
    }

    fn query(&self, q: &LogQuery) -> Result<Vec<StoredLog>, TableError> {
        let ascending = q.after_id.is_some();
        let limit = q.limit.max(1) as usize;
        // The views are taken under the lock, the files read without it.
        let views: Vec<(String, Vec<View>)> = {
            let state = self.lock();
            state
                .apps
                .iter()
                .filter(|(app, _)| q.app.as_ref().is_none_or(|a| a == *app))
                .map(|(app, log)| (app.clone(), log.views(q)))
                .collect()
        };
        let mut found = Vec::new();
        for (app, mut views) in views {
            if !ascending {
                views.reverse();
            }
            let mut of_app = 0;
            for view in views {
                if of_app >= limit {
                    break;
                }
                let matched = view.read(&app, q, limit - of_app)?;
                of_app += matched.len();
                found.extend(matched);
            }
        }
        found.sort_unstable_by_key(|r| r.id);
        if ascending {
            found.truncate(limit);
        } else if found.len() > limit {
            found.drain(..found.len() - limit);
        }
        Ok(found)
    }

    fn trim(&self, before_ms: i64, budget: LogBudget) -> Trimmed {
        let now = now_ms();
        let mut gone: Vec<(PathBuf, u64, u64)> = Vec::new();
        {
            let mut state = self.lock();
            let state = &mut *state;
            for app_log in state.apps.values_mut() {
                app_log.retire(self.limits, now);
                // Past the age limit.
                while let Some(oldest) = app_log.sealed.front()
                    && oldest.span.max_ts < before_ms
                {
                    gone.push(app_log.pop_oldest());
                }
                if app_log.sealed.is_empty()
                    && app_log
                        .open
                        .as_ref()
                        .is_some_and(|o| o.span.max_ts < before_ms)
                {
                    gone.push(app_log.pop_oldest());
                }
                // Each app over its own share first, its oldest first: a
                // noisy app loses its own records before anyone else's.
                while app_log.bytes > budget.per_app && app_log.has_segments() {
                    gone.push(app_log.pop_oldest());
                }
            }
            state.total = state.apps.values().map(|a| a.bytes).sum();
            // Then the oldest of all, until all fit.
            while state.total > budget.total {
                let Some(app_log) = state
                    .apps
                    .values_mut()
                    .filter(|a| a.has_segments())
                    .min_by_key(|a| a.first_id())
                else {
                    break;
                };
                let segment = app_log.pop_oldest();
                state.total -= segment.1;
                gone.push(segment);
            }
            state.apps.retain(|_, a| a.has_segments());
        }
        let mut trimmed = Trimmed::default();
        for (path, bytes, records) in gone {
            match std::fs::remove_file(&path) {
                Ok(()) => trimmed.reclaimed += bytes,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "cannot delete a log segment")
                }
            }
            trimmed.bytes += bytes;
            trimmed.records += records;
        }
        trimmed
    }
}

impl AppLog {
    fn new(dir: PathBuf) -> AppLog {
        AppLog {
            dir,
            sealed: VecDeque::new(),
            open: None,
            bytes: 0,
        }
    }

    /// Reads the summaries of the segments in `dir`; the newest stays open
    /// for appending, its torn tail (if any) cut off.
    fn load(dir: PathBuf) -> Result<AppLog, TableError> {
        let mut app_log = AppLog::new(dir.clone());
        let mut files: Vec<(i64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|err| TableError::Io {
            path: dir.clone(),
            err,
        })? {
            let entry = entry.map_err(|err| TableError::Io {
                path: dir.clone(),
                err,
            })?;
            let name = entry.file_name();
            let first = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| i64::from_str_radix(n, 16).ok());
            match first {
                Some(first) => files.push((first, entry.path())),
                None => {
                    tracing::warn!(path = %entry.path().display(), "not a log segment; left alone")
                }
            }
        }
        files.sort();
        let count = files.len();
        for (i, (_, path)) in files.into_iter().enumerate() {
            let bytes = std::fs::read(&path).map_err(|err| TableError::Io {
                path: path.clone(),
                err,
            })?;
            let scan = Scan::of(&bytes);
            if scan.end < bytes.len() {
                tracing::warn!(
                    path = %path.display(),
                    kept = scan.end,
                    cut = bytes.len() - scan.end,
                    "a log segment ends in a torn or damaged record; cut off there"
                );
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(scan.end as u64));
                if let Err(err) = file {
                    return Err(TableError::Io { path, err });
                }
            }
            let Some(span) = scan.span else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let len = scan.end as u64;
            app_log.bytes += len;
            if i + 1 == count {
                app_log.open = Some(Open {
                    path,
                    file: None,
                    len,
                    marks: scan.marks,
                    begun_ms: span.min_ts,
                    span,
                    functions: scan.functions,
                    requests: scan.requests,
                    synced: true,
                    synced_at: Instant::now(),
                    written: Instant::now(),
                });
            } else {
                app_log.sealed.push_back(Arc::new(Sealed {
                    requests: Bloom::of(&scan.requests),
                    functions: sorted(scan.functions),
                    path,
                    bytes: len,
                    span,
                    marks: scan.marks,
                }));
            }
        }
        Ok(app_log)
    }

    fn has_segments(&self) -> bool {
        !self.sealed.is_empty() || self.open.is_some()
    }

    fn first_id(&self) -> Option<i64> {
        self.sealed
            .front()
            .map(|s| s.span.first_id)
            .or_else(|| self.open.as_ref().map(|o| o.span.first_id))
    }

    fn last_id(&self) -> Option<i64> {
        self.open
            .as_ref()
            .map(|o| o.span.last_id)
            .or_else(|| self.sealed.back().map(|s| s.span.last_id))
    }

    /// Takes the oldest segment off the books: its path, bytes and records.
    fn pop_oldest(&mut self) -> (PathBuf, u64, u64) {
        let (path, bytes, records) = match self.sealed.pop_front() {
            Some(sealed) => (sealed.path.clone(), sealed.bytes, sealed.span.records),
            None => {
                let open = self.open.take().expect("a segment to take");
                (open.path, open.len, open.span.records)
            }
        };
        self.bytes -= bytes;
        (path, bytes, records)
    }

    /// Seals the open segment when it has grown too old, and lets go of
    /// its descriptor when idle.
    fn retire(&mut self, limits: SegmentLimits, now: i64) {
        if let Some(open) = &mut self.open {
            if open.begun_ms + (limits.roll_after.as_millis() as i64) < now {
                self.seal();
            } else if open.written.elapsed() >= IDLE_CLOSE
                && let Some(file) = open.file.take()
                && !open.synced
            {
                let _ = file.sync_data();
                open.synced = true;
            }
        }
    }

    fn seal(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        if let Some(file) = &open.file
            && !open.synced
            && let Err(err) = file.sync_data()
        {
            tracing::warn!(path = %open.path.display(), %err, "cannot sync a log segment");
        }
        self.sealed.push_back(Arc::new(Sealed {
            requests: Bloom::of(&open.requests),
            functions: sorted(open.functions),
            path: open.path,
            bytes: open.len,
            span: open.span,
            marks: open.marks,
        }));
    }

    fn write(
        &mut self,
        records: &[(i64, LogRecord)],
        limits: SegmentLimits,
        now: i64,
    ) -> Result<(), TableError> {
        let mut buf = Vec::with_capacity(64 << 10);
        // The records in `buf`, from this index on.
        let mut from = 0;
        for (i, (id, record)) in records.iter().enumerate() {
            let at = buf.len();
            encode(&mut buf, *id, record);
            let len = self.open.as_ref().map_or(0, |o| o.len);
            let over = len + at as u64 > 0 && len + buf.len() as u64 > limits.segment_bytes;
            let old = self
                .open
                .as_ref()
                .is_some_and(|o| o.begun_ms + (limits.roll_after.as_millis() as i64) < now);
            if over || old {
                self.append(&buf[..at], &records[from..i])?;
                buf.drain(..at);
                from = i;
                self.seal();
            }
        }
        self.append(&buf, &records[from..])
    }

    /// Writes `frames`, which encode `records`, to the open segment (begun
    /// if there is none). A failed write leaves the segment as it was.
    fn append(&mut self, frames: &[u8], records: &[(i64, LogRecord)]) -> Result<(), TableError> {
        let Some((first_id, first)) = records.first() else {
            return Ok(());
        };
        let open = match &mut self.open {
            Some(open) => open,
            None => {
                let path = self.dir.join(format!("{first_id:016x}.log"));
                self.open.insert(Open {
                    path,
                    file: None,
                    len: 0,
                    marks: Vec::new(),
                    span: Span::new(*first_id, first.ts_ms),
                    functions: HashSet::new(),
                    requests: HashSet::new(),
                    begun_ms: now_ms(),
                    synced: true,
                    synced_at: Instant::now(),
                    written: Instant::now(),
                })
            }
        };
        let file = match &mut open.file {
            Some(file) => file,
            None => {
                use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
                let io = |err| TableError::Io {
                    path: open.path.clone(),
                    err,
                };
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)
                    .map_err(io)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&open.path)
                    .map_err(io)?;
                open.file.insert(file)
            }
        };
        let base = open.len;
        if let Err(err) = file.write_all(frames) {
            // No record half written stays behind.
            let _ = file.set_len(open.len);
            if open.len == 0 {
                let _ = std::fs::remove_file(&open.path);
                self.open = None;
            }
            return Err(TableError::Io {
                path: self.dir.clone(),
                err,
            });
        }
        let mut offset = open.len;
        open.len += frames.len() as u64;
        self.bytes += frames.len() as u64;
        for (id, record) in records {
            mark(&mut open.marks, offset, *id);
            let body = u32::from_le_bytes(
                frames[(offset - base) as usize..][..4]
                    .try_into()
                    .expect("a frame head"),
            );
            offset += (HEAD + body as usize) as u64;
            open.span.add(*id, record.ts_ms);
            if !open.functions.contains(&record.function) {
                open.functions.insert(record.function.clone());
            }
            if let Some(request) = &record.request_id {
                open.requests.insert(hash(request));
            }
        }
        open.synced = false;
        if open.synced_at.elapsed() >= SYNC_EVERY {
            let _ = file.sync_data();
            open.synced = true;
            open.synced_at = Instant::now();
        }
        open.written = Instant::now();
        Ok(())
    }

    /// The segments that may hold what `q` asks for, oldest first.
    fn views(&self, q: &LogQuery) -> Vec<View> {
        let spans = |span: &Span| {
            !(q.after_id.is_some_and(|after| span.last_id <= after)
                || q.since_ms.is_some_and(|since| span.max_ts < since)
                || q.until_ms.is_some_and(|until| span.min_ts >= until))
        };
        let mut views: Vec<View> = self
            .sealed
            .iter()
            .filter(|s| {
                spans(&s.span)
                    && q.function.as_ref().is_none_or(|f| s.functions.contains(f))
                    && q.request_id
                        .as_ref()
                        .is_none_or(|r| s.requests.may_hold(hash(r)))
            })
            .map(|s| View {
                path: s.path.clone(),
                len: s.bytes,
                marks: s.marks.clone(),
            })
            .collect();
        if let Some(open) = &self.open
            && spans(&open.span)
            && q.function
                .as_ref()
                .is_none_or(|f| open.functions.contains(f))
            && q.request_id
                .as_ref()
                .is_none_or(|r| open.requests.contains(&hash(r)))
        {
            views.push(View {
                path: open.path.clone(),
                len: open.len,
                marks: open.marks.clone(),
            });
        }
        views
    }
}

impl View {
    /// Up to `need` records of the segment that match `q`, oldest first:
    /// the newest of them, or with `after_id` the oldest after it. Reads
    /// block by block, from the end or from the block that holds the id.
    fn read(&self, app: &str, q: &LogQuery, need: usize) -> Result<Vec<StoredLog>, TableError> {
        let io = |err| TableError::Io {
            path: self.path.clone(),
            err,
        };
        let file = match File::open(&self.path) {
            Ok(file) => file,
            // Trimmed since the view was taken.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io(err)),
        };
        let blocks = self.marks.len();
        let range = |i: usize| {
            let end = self.marks.get(i + 1).map_or(self.len, |m| m.offset);
            (self.marks[i].offset, end)
        };
        let mut buf = Vec::new();
        let mut found = Vec::new();
        if let Some(after) = q.after_id {
            let first = self
                .marks
                .partition_point(|m| m.first_id <= after)
                .saturating_sub(1);
            for i in first..blocks {
                let (start, end) = range(i);
                buf.resize((end - start) as usize, 0);
                file.read_exact_at(&mut buf, start).map_err(io)?;
                self.matching(&buf, app, q, &mut found);
                if found.len() >= need {
                    found.truncate(need);
                    break;
                }
            }
        } else {
            let mut block = Vec::new();
            for i in (0..blocks).rev() {
                let (start, end) = range(i);
                buf.resize((end - start) as usize, 0);
                file.read_exact_at(&mut buf, start).map_err(io)?;
                block.clear();
                self.matching(&buf, app, q, &mut block);
                block.append(&mut found);
                std::mem::swap(&mut found, &mut block);
                if found.len() >= need {
                    found.drain(..found.len() - need);
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Adds the records in `bytes` (whole frames) that match `q` to `found`.
    fn matching(&self, bytes: &[u8], app: &str, q: &LogQuery, found: &mut Vec<StoredLog>) {
        for frame in Frames::new(bytes) {
            if q.after_id.is_some_and(|after| frame.id <= after)
                || q.since_ms.is_some_and(|since| frame.ts_ms < since)
                || q.until_ms.is_some_and(|until| frame.ts_ms >= until)
                || q.function.as_ref().is_some_and(|f| f != frame.function)
                || q.request_id
                    .as_ref()
                    .is_some_and(|r| Some(r.as_str()) != frame.request_id)
            {
                continue;
            }
            let Some(record) = frame.record(app) else {
                tracing::warn!(path = %self.path.display(), id = frame.id, "an unreadable log record; skipped");
                continue;
            };
            if q.contains
                .as_ref()
                .is_some_and(|text| !record.message.contains(text.as_str()))
            {
                continue;
            }
            found.push(StoredLog {
                id: frame.id,
                record,
            });
        }
    }
}

/// What a pass over a segment's frames found.
struct Scan {
    /// Where the last whole frame ends.
    end: usize,
    marks: Vec<Mark>,
    span: Option<Span>,
    functions: HashSet<String>,
    requests: HashSet<u64>,
}

impl Scan {
    fn of(bytes: &[u8]) -> Scan {
        let mut scan = Scan {
            end: 0,
            marks: Vec::new(),
            span: None,
            functions: HashSet::new(),
            requests: HashSet::new(),
        };
        let mut frames = Frames::new(bytes);
        loop {
            let offset = frames.at as u64;
            let Some(frame) = frames.next() else {
                break;
            };
            mark(&mut scan.marks, offset, frame.id);
            scan.span
                .get_or_insert_with(|| Span::new(frame.id, frame.ts_ms))
                .add(frame.id, frame.ts_ms);
            if !scan.functions.contains(frame.function) {
                scan.functions.insert(frame.function.to_owned());
            }
            if let Some(request) = frame.request_id {
                scan.requests.insert(hash(request));
            }
        }
        scan.end = frames.at;
        scan
    }
}

fn encode(out: &mut Vec<u8>, id: i64, record: &LogRecord) {
    let start = out.len();
    out.extend_from_slice(&[0; HEAD]);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&record.ts_ms.to_le_bytes());
    out.extend_from_slice(&record.version.to_le_bytes());
    out.push(stream_code(record.stream));
    put(out, Some(&record.function));
    put(out, Some(&record.instance));
    put(out, record.request_id.as_deref());
    put(out, Some(&record.message));
    let fields = record.fields.as_ref().map(|f| f.to_string());
    put(out, fields.as_deref());
    let body = &out[start + HEAD..];
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEAD].copy_from_slice(&crc.to_le_bytes());
}

fn put(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        None => out.extend_from_slice(&NONE.to_le_bytes()),
    }
}

fn stream_code(stream: LogStream) -> u8 {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
        LogStream::Platform => 2,
        LogStream::Report => 3,
        LogStream::Request => 4,
    }
}

fn stream_of(code: u8) -> Option<LogStream> {
    LogStream::ALL.into_iter().find(|s| stream_code(*s) == code)
}

/// One frame, its strings borrowed from the segment.
struct Frame<'a> {
    id: i64,
    ts_ms: i64,
    version: u32,
    stream: u8,
    function: &'a str,
    instance: &'a [u8],
    request_id: Option<&'a str>,
    message: &'a [u8],
    fields: Option<&'a [u8]>,
}

impl Frame<'_> {
    fn record(&self, app: &str) -> Option<LogRecord> {
        Some(LogRecord {
            ts_ms: self.ts_ms,
            app: app.to_owned(),
            function: self.function.to_owned(),
            version: self.version,
            instance: std::str::from_utf8(self.instance).ok()?.to_owned(),
            request_id: self.request_id.map(str::to_owned),
            stream: stream_of(self.stream)?,
            message: std::str::from_utf8(self.message).ok()?.to_owned(),
            fields: match self.fields {
                Some(fields) => Some(serde_json::from_slice(fields).ok()?),
                None => None,
            },
        })
    }
}

/// The whole, intact frames at the start of a segment; stops at the
/// first torn or damaged one, where `at` is left.
struct Frames<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Frames<'a> {
    fn new(bytes: &'a [u8]) -> Frames<'a> {
        Frames { bytes, at: 0 }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        let rest = &self.bytes[self.at..];
        let head = rest.get(..HEAD)?;
        let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
        if len > MAX_BODY {
            return None;
        }
        let body = rest.get(HEAD..HEAD + len)?;
        if crc32fast::hash(body) != crc {
            return None;
        }
        let frame = decode(body)?;
        self.at += HEAD + len;
        Some(frame)
    }
}

fn decode(body: &[u8]) -> Option<Frame<'_>> {
    let mut r = Reader { bytes: body };
    let id = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let ts_ms = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let version = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
    let stream = r.take(1)?[0];
    let function = std::str::from_utf8(r.string()??).ok()?;
    let instance = r.string()??;
    let request_id = match r.string()? {
        Some(request) => Some(std::str::from_utf8(request).ok()?),
        None => None,
    };
    let message = r.string()??;
    let fields = r.string()?;
    Some(Frame {
        id,
        ts_ms,
        version,
        stream,
        function,
        instance,
        request_id,
        message,
        fields,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(head)
    }

    /// `Some(None)` for a missing string, `None` past the end.
    fn string(&mut self) -> Option<Option<&'a [u8]>> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        if len == NONE {
            return Some(None);
        }
        Some(Some(self.take(len as usize)?))
    }
}

/// A Bloom filter of request ids, for skipping the segments that cannot
/// hold one.
struct Bloom {
    bits: Vec<u64>,
}

impl Bloom {
    fn of(hashes: &HashSet<u64>) -> Bloom {
        let words = (hashes.len() * BLOOM_BITS).div_ceil(64).max(1);
        let mut bloom = Bloom {
            bits: vec![0; words],
        };
        for &h in hashes {
            for bit in bloom.probes(h) {
                bloom.bits[bit / 64] |= 1 << (bit % 64);
            }
        }
        bloom
    }

    fn may_hold(&self, h: u64) -> bool {
        self.probes(h)
            .all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }

    fn probes(&self, h: u64) -> impl Iterator<Item = usize> + use<> {
        let n = (self.bits.len() * 64) as u64;
        let (a, b) = (h & 0xffff_ffff, (h >> 32) | 1);
        (0..BLOOM_PROBES).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) % n) as usize)
    }
}

/// A request id's hash for the Bloom filters. They are made at start
/// from what is on the disk and only compared within one process.
fn hash(request: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    request.hash(&mut hasher);
    hasher.finish()
}

fn sorted(set: HashSet<String>) -> Vec<String> {
    let mut v: Vec<String> = set.into_iter().collect();
    v.sort_unstable();
    v
}

/// An app's directory: its name where that is a plain file name,
/// otherwise `~` and the name in hex.
fn dir_of_app(app: &str) -> String {
    let plain = !app.is_empty()
        && app.len() <= 200
        && !app.starts_with(['.', '~'])
        && app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if plain {
        app.to_owned()
    } else {
        let mut dir = String::from("~");
        for b in app.bytes() {
            dir.push_str(&format!("{b:02x}"));
        }
        dir
    }
}

fn app_of_dir(dir: &str) -> Option<String> {
    match dir.strip_prefix('~') {
        Some(hex) => {
            if hex.len() % 2 != 0 {
                return None;
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            String::from_utf8(bytes).ok()
        }
        None => (!dir.starts_with('.')).then(|| dir.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(app: &str, function: &str, request: &str, ts_ms: i64, message: &str) -> LogRecord {
        LogRecord {
            ts_ms,
            app: app.into(),
            function: function.into(),
            version: 3,
            instance: "i".into(),
            request_id: (!request.is_empty()).then(|| request.into()),
            stream: LogStream::Stderr,
            message: message.into(),
            fields: Some(serde_json::json!({"n": 1})),
        }
    }

    #[test]
    fn frames_round_trip_and_stop_at_a_torn_or_damaged_one() {
        let mut bytes = Vec::new();
        encode(&mut bytes, 7, &record("a", "f", "r", 5, "héllo"));
        encode(&mut bytes, 8, &record("a", "g", "", 6, ""));
        let whole = bytes.len();
        encode(&mut bytes, 9, &record("a", "f", "r", 7, "torn"));
        bytes.truncate(bytes.len() - 2);
        let frames: Vec<_> = Frames::new(&bytes).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(
            frames[0].record("a").unwrap(),
            record("a", "f", "r", 5, "héllo")
        );
        assert_eq!(frames[1].request_id, None);
        assert_eq!(Scan::of(&bytes).end, whole);
        // A flipped bit ends the segment there.
        bytes[HEAD + 3] ^= 1;
        assert_eq!(Frames::new(&bytes).count(), 0);
    }

    #[test]
    fn a_bloom_filter_holds_what_it_was_given_and_little_else() {
        let given: HashSet<u64> = (0..1000).map(|i| hash(&format!("r{i}"))).collect();
        let bloom = Bloom::of(&given);
        assert!(given.iter().all(|h| bloom.may_hold(*h)));
        let false_positives = (0..10_000)
            .filter(|i| bloom.may_hold(hash(&format!("other{i}"))))
            .count();
        assert!(false_positives < 300, "{false_positives} false positives");
    }

    #[test]
    fn app_names_map_to_directories_and_back() {
        for app in ["shop", "a-b_c.d", "", ".hidden", "~x", "ü/../x"] {
            let dir = dir_of_app(app);
            assert!(!dir.contains('/') && dir != "." && dir != "..", "{dir}");
            assert_eq!(app_of_dir(&dir).as_deref(), Some(app));
        }
    }
}
