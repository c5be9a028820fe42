//! The policy daemon's persistent MTA-STS cache: an embedded SQLite database (one file) that
//! keeps every fetched policy until its `max_age` ends, so a restart neither loses policies
//! nor has to fetch them again.
//!
//! Schema (version 1):
//!
//! ```sql
//! CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);   -- schema_version = 1
//! CREATE TABLE sts_policy (
//!     domain     TEXT PRIMARY KEY,   -- canonical form: lowercase, no final dot
//!     policy_id  TEXT NOT NULL,      -- the _mta-sts TXT id it was fetched under
//!     policy     TEXT NOT NULL,      -- the policy in canonical text form (CRLF lines)
//!     fetched_at INTEGER NOT NULL,   -- Unix seconds: its max_age counts from here
//!     checked_at INTEGER NOT NULL,   -- Unix seconds: the TXT id was last seen then
//!     expires_at INTEGER NOT NULL    -- Unix seconds: fetched_at + max_age
//! );
//! ```
//!
//! Writes never block the caller: they are queued to one writer thread, which applies what
//! has queued up in one transaction. [`PolicyStore::flush`] waits until everything queued
//! before it is on disk.
//!
//! [`PolicyStore::open_read_only`] only reads the file (for `policy serve --check`, which a
//! user who may not write the daemon's store can run, and which leaves a running daemon's
//! store alone): nothing is deleted, and writes are dropped.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, params};
use sigillo_policy::cache::CachedPolicy;
use sigillo_policy::mta_sts::Policy;

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Why the store cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file cannot be opened or set up.
    #[error("policy store {path}: {message}")]
    Open { path: String, message: String },
    /// The file holds another schema version.
    #[error("policy store {path}: schema version {got}, expected {expected}")]
    Schema {
        path: String,
        expected: u32,
        got: String,
    },
    /// A write failed (the message of the last failure, and how many failed).
    #[error("policy store: {failed} write(s) failed, last: {message}")]
    Write { failed: u64, message: String },
    /// The writer thread is gone.
    #[error("policy store: writer stopped")]
    Closed,
}

/// What opening the store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Unexpired policies, by domain.
    pub policies: Vec<(String, CachedPolicy)>,
    /// Expired rows, deleted while loading (counted only, when read-only).
    pub expired: usize,
    /// Rows that could not be read back (bad policy text or timestamps), deleted (counted
    /// only, when read-only).
    pub unreadable: usize,
}

enum Op {
    Put {
        domain: String,
        cached: Box<CachedPolicy>,
    },
    Delete {
        domain: String,
    },
    Flush(tokio::sync::oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct WriteErrors {
    failed: u64,
    last: Option<String>,
}

/// A handle on the store; writes are queued to its writer thread.
#[derive(Debug)]
pub struct PolicyStore {
    path: PathBuf,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    errors: Arc<Mutex<WriteErrors>>,
    /// Opened with [`PolicyStore::open_read_only`]: writes are dropped.
    read_only: bool,
}

impl PolicyStore {
    /// Opens (creating if needed) the database at `path` and loads every policy still valid
    /// at `now`; expired and unreadable rows are deleted.
    pub fn open(path: &Path, now: Timestamp) -> Result<(Self, Loaded), StoreError> {
        let display = path.display().to_string();
        let open_error = |e: rusqlite::Error| StoreError::Open {
            path: display.clone(),
            message: e.to_string(),
        };
        let mut conn = Connection::open(path).map_err(open_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS sts_policy (
                 domain TEXT PRIMARY KEY,
                 policy_id TEXT NOT NULL,
                 policy TEXT NOT NULL,
                 fetched_at INTEGER NOT NULL,
                 checked_at INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL
             ) WITHOUT ROWID;
             INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');",
        )
        .map_err(open_error)?;
        let version = schema_version(&conn).map_err(open_error)?;
        expect_schema(display.clone(), version)?;
        let loaded = load(&mut conn, now, true).map_err(open_error)?;
        let (sender, receiver) = mpsc::channel();
        let errors = Arc::new(Mutex::new(WriteErrors::default()));
        let writer = {
            let errors = errors.clone();
            std::thread::Builder::new()
                .name("policy-store".into())
                .spawn(move || write_loop(conn, receiver, errors))
                .map_err(|e| StoreError::Open {
                    path: display.clone(),
                    message: format!("starting the writer thread: {e}"),
                })?
        };
        Ok((
            Self {
                path: path.to_owned(),
                ops: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
                errors,
                read_only: false,
            },
            loaded,
        ))
    }

    /// Opens the database at `path` only to read it, and loads every policy still valid at
    /// `now`. Expired and unreadable rows are counted, not deleted; [`PolicyStore::put`] and
    /// [`PolicyStore::delete`] do nothing, and [`PolicyStore::flush`] has nothing to wait
    /// for. The file must exist and hold this schema.
    pub fn open_read_only(path: &Path, now: Timestamp) -> Result<(Self, Loaded), StoreError> {
        let display = path.display().to_string();
        let open_error = |e: rusqlite::Error| StoreError::Open {
            path: display.clone(),
            message: e.to_string(),
        };
        let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(open_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_error)?;
        let version = match schema_version(&conn) {
            Ok(version) => version,
            // A WAL database needs its `-shm` file, which a reader that may not write the
            // directory cannot create once the daemon has stopped and removed it. Then the
            // file alone is read, as it is on disk (`immutable`).
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) => {
                conn = Connection::open_with_flags(
                    format!("file:{}?immutable=1", uri_path(path)),
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
                )
                .map_err(open_error)?;
                schema_version(&conn).map_err(open_error)?
            }
            Err(e) => return Err(open_error(e)),
        };
        expect_schema(display.clone(), version)?;
        let loaded = load(&mut conn, now, false).map_err(open_error)?;
        Ok((
            Self {
                path: path.to_owned(),
                ops: Mutex::new(None),
                writer: Mutex::new(None),
                errors: Arc::default(),
                read_only: true,
            },
            loaded,
        ))
    }

    /// Whether the store was opened with [`PolicyStore::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        let ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        match ops.as_ref() {
            Some(sender) => sender.send(op).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Queues saving `cached` as the policy of `domain` (replacing any).
    pub fn put(&self, domain: &str, cached: &CachedPolicy) {
        if self.read_only {
            return;
        }
        let op = Op::Put {
            domain: domain.to_owned(),
            cached: Box::new(cached.clone()),
        };
        if self.send(op).is_err() {
            self.record_error("put after close".into());
        }
    }

    /// Queues deleting the policy of `domain`.
    pub fn delete(&self, domain: &str) {
        if self.read_only {
            return;
        }
        let op = Op::Delete {
            domain: domain.to_owned(),
        };
        if self.send(op).is_err() {
            self.record_error("delete after close".into());
        }
    }

    fn record_error(&self, message: String) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        errors.failed += 1;
        errors.last = Some(message);
    }

    /// Waits until every write queued before this call is committed; reports (and resets)
    /// the writes that failed since the last flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Ok(());
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(Op::Flush(done))?;
        wait.await.map_err(|_| StoreError::Closed)?;
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        match errors.last.take() {
            None => Ok(()),
            Some(message) => {
                let failed = std::mem::take(&mut errors.failed);
                Err(StoreError::Write { failed, message })
            }
        }
    }

    /// Stops the writer after it has written everything queued (also done on drop).
    pub fn close(&self) {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = writer {
            let _ = handle.join();
        }
    }
}

impl Drop for PolicyStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// The schema version the file says it holds.
fn schema_version(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        [],
        |row| row.get(0),
    )
}

/// `Ok` when `version` (of the store at `path`) is [`SCHEMA_VERSION`].
fn expect_schema(path: String, version: String) -> Result<(), StoreError> {
    if version == SCHEMA_VERSION.to_string() {
        return Ok(());
    }
    Err(StoreError::Schema {
        path,
        expected: SCHEMA_VERSION,
        got: version,
    })
}

/// `path` for a `file:` URI: every byte but unreserved ones and `/` percent-encoded.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every policy in the store still valid at `now`; expired and unreadable rows are counted,
/// and deleted if `delete_stale`.
fn load(conn: &mut Connection, now: Timestamp, delete_stale: bool) -> rusqlite::Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut stale: Vec<String> = Vec::new();
    {
        let mut statement = conn
            .prepare("SELECT domain, policy_id, policy, fetched_at, checked_at FROM sts_policy")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?;
        for row in rows {
            let (domain, id, text, fetched_at, checked_at) = row?;
            let cached = (|| {
                Some(CachedPolicy {
                    id,
                    policy: Policy::parse_stored(&text).ok()?,
                    fetched_at: Timestamp::from_second(fetched_at).ok()?,
                    checked_at: Timestamp::from_second(checked_at).ok()?,
                })
            })();
            match cached {
                Some(c) if c.is_valid_at(now) => loaded.policies.push((domain, c)),
                Some(_) => {
                    loaded.expired += 1;
                    stale.push(domain);
                }
                None => {
                    loaded.unreadable += 1;
                    stale.push(domain);
                }
            }
        }
    }
    if delete_stale && !stale.is_empty() {
        let tx = conn.transaction()?;
        for domain in &stale {
            tx.execute("DELETE FROM sts_policy WHERE domain = ?1", params![domain])?;
        }
        tx.commit()?;
    }
    Ok(loaded)
}

fn write_loop(mut conn: Connection, ops: mpsc::Receiver<Op>, errors: Arc<Mutex<WriteErrors>>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        batch.extend(ops.try_iter());
        let mut flushed = Vec::new();
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for op in batch {
                match op {
                    Op::Put { domain, cached } => {
                        tx.execute(
                            "INSERT INTO sts_policy
                                 (domain, policy_id, policy, fetched_at, checked_at, expires_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                             ON CONFLICT (domain) DO UPDATE SET
                                 policy_id = excluded.policy_id, policy = excluded.policy,
                                 fetched_at = excluded.fetched_at,
                                 checked_at = excluded.checked_at,
                                 expires_at = excluded.expires_at",
                            params![
                                domain,
                                cached.id,
                                cached.policy.to_text(),
                                cached.fetched_at.as_second(),
                                cached.checked_at.as_second(),
                                cached.expires_at().as_second(),
                            ],
                        )?;
                    }
                    Op::Delete { domain } => {
                        tx.execute("DELETE FROM sts_policy WHERE domain = ?1", params![domain])?;
                    }
                    Op::Flush(done) => flushed.push(done),
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            let mut errors = errors.lock().unwrap_or_else(PoisonError::into_inner);
            errors.failed += 1;
            errors.last = Some(e.to_string());
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigillo_policy::mta_sts::Mode;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn policy(max_age: u32) -> Policy {
        Policy::parse(
            format!("version: STSv1\nmode: enforce\nmx: *.example.net\nmax_age: {max_age}\n")
                .as_bytes(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn policies_survive_reopening_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies.sqlite");
        let (store, loaded) = PolicyStore::open(&path, at(0)).unwrap();
        assert_eq!(loaded, Loaded::default());
        let long = CachedPolicy::new("id1".into(), policy(86_400), at(0));
        let mut short = CachedPolicy::new("id2".into(), policy(100), at(0));
        short.confirm_id(at(50));
        store.put("long.example", &long);
        store.put("short.example", &short);
        store.put("gone.example", &long);
        store.delete("gone.example");
        store.flush().await.unwrap();
        drop(store);

        let (store, mut loaded) = PolicyStore::open(&path, at(99)).unwrap();
        loaded.policies.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            loaded.policies,
            vec![
                ("long.example".to_owned(), long.clone()),
                ("short.example".to_owned(), short),
            ]
        );
        assert_eq!(loaded.policies[0].1.policy.mode, Mode::Enforce);
        drop(store);

        // At +100 s the short one has expired: dropped, and deleted from the file.
        let (_, loaded) = PolicyStore::open(&path, at(100)).unwrap();
        assert_eq!(loaded.policies, vec![("long.example".to_owned(), long)]);
        assert_eq!(loaded.expired, 1);
        let (_, loaded) = PolicyStore::open(&path, at(0)).unwrap();
        assert_eq!((loaded.policies.len(), loaded.expired), (1, 0));
    }

    #[tokio::test]
    async fn a_read_only_store_reads_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies.sqlite");
        // Missing: an error, and no file made.
        assert!(matches!(
            PolicyStore::open_read_only(&path, at(0)),
            Err(StoreError::Open { .. })
        ));
        assert!(!path.exists());
        let (store, _) = PolicyStore::open(&path, at(0)).unwrap();
        let long = CachedPolicy::new("id1".into(), policy(86_400), at(0));
        let short = CachedPolicy::new("id2".into(), policy(100), at(0));
        store.put("long.example", &long);
        store.put("short.example", &short);
        store.flush().await.unwrap();
        drop(store);
        let bytes = std::fs::read(&path).unwrap();

        // At +100 s the short one has expired: counted, not deleted; writes are dropped.
        let (store, loaded) = PolicyStore::open_read_only(&path, at(100)).unwrap();
        assert!(store.is_read_only());
        assert_eq!(
            (loaded.policies, loaded.expired),
            (vec![("long.example".to_owned(), long.clone())], 1)
        );
        store.put("new.example", &long);
        store.delete("long.example");
        store.flush().await.unwrap();
        drop(store);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file is unchanged"
        );
        let (_, loaded) = PolicyStore::open(&path, at(0)).unwrap();
        let mut domains: Vec<String> = loaded.policies.into_iter().map(|(d, _)| d).collect();
        domains.sort();
        assert_eq!(domains, ["long.example", "short.example"]);
    }

    #[test]
    fn uri_paths_are_percent_encoded() {
        for (path, want) in [
            (
                "/var/lib/sigillo/policies.sqlite",
                "/var/lib/sigillo/policies.sqlite",
            ),
            ("/a b/p?x#y%.db", "/a%20b/p%3Fx%23y%25.db"),
            ("/tmp/é", "/tmp/%C3%A9"),
        ] {
            assert_eq!(uri_path(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn unreadable_rows_and_other_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies.sqlite");
        drop(PolicyStore::open(&path, at(0)).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO sts_policy VALUES ('bad.example', 'x', 'mode: sometimes', 0, 0, 9e9)",
            [],
        )
        .unwrap();
        drop(conn);
        let (_, loaded) = PolicyStore::open(&path, at(0)).unwrap();
        assert_eq!((loaded.policies.len(), loaded.unreadable), (0, 1));

        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE meta SET value = '7' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        drop(conn);
        assert_eq!(
            PolicyStore::open(&path, at(0)).unwrap_err(),
            StoreError::Schema {
                path: path.display().to_string(),
                expected: 1,
                got: "7".into()
            }
        );
        let not_a_db = dir.path().join("not-a-db");
        std::fs::write(
            &not_a_db,
            b"this is not SQLite, but long enough to look at the header",
        )
        .unwrap();
        assert!(matches!(
            PolicyStore::open(&not_a_db, at(0)),
            Err(StoreError::Open { .. })
        ));
    }
}
