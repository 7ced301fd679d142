//! The sled store of the read models: atomic batches with the checkpoint, reads, read-your-writes.
//!
//! Every read goes through one open store from its start to its end, and meets damage as an error
//! (see [`super::health`]): it reports it, so that the projector replaces the store and rebuilds
//! it, and it never answers from a store being rebuilt.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use orchestrator_events::{SessionId, UserId, VmId};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::apply::{self, Kv, Overlay};
use super::health::{self, Health, Rebuild};
use super::keys::{self, SESSIONS_PREFIX, VERSION_KEY};
use super::model::{Capacity, SessionView, VmView};
use super::open::{self as opening, Db};
use super::{ProjectionError, PROJECTION_VERSION};
use crate::domain::{SessionStatus, VmStatus};
use crate::log::LogIdentity;

impl Kv for sled::Tree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        Ok(sled::Tree::get(self, key)?.map(|v| v.to_vec()))
    }
}

/// Every key and value of a store.
pub type Dump = BTreeMap<Vec<u8>, Vec<u8>>;

/// Why the store was (re)built empty when opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// It was readable and of the current version: resume from its checkpoint.
    Resumed {
        /// The checkpoint.
        checkpoint: u64,
    },
    /// It did not exist.
    Created,
    /// Its version differed: cleared, to be rebuilt from the log.
    VersionChanged {
        /// The version found.
        found: u32,
    },
    /// sled could not open it: moved aside, to be rebuilt from the log.
    Unreadable {
        /// What was wrong.
        reason: String,
    },
    /// It opened, but the scan at open found it damaged (see [`super::health`]): moved aside, to
    /// be rebuilt from the log.
    Corrupt {
        /// What was damaged.
        reason: String,
    },
    /// It was built from another log (another cell, another stream, a stream created anew, or
    /// one shorter than its checkpoint): cleared, to be rebuilt from this one.
    OtherLog {
        /// What differed.
        reason: String,
    },
}

/// The log a store was built from, as recorded in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Origin {
    cell: String,
    stream: String,
    created: i128,
}

/// The key of the store's [`Origin`].
pub(super) const ORIGIN_KEY: &[u8] = b"_origin";

/// Filters of a session listing. All given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Only this user's sessions.
    pub user_id: Option<UserId>,
    /// Only sessions in this status.
    pub status: Option<SessionStatus>,
    /// Only sessions holding a slot on this VM.
    pub vm_id: Option<VmId>,
}

/// A page of sessions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct SessionPage {
    /// The sessions, sorted by id.
    pub sessions: Vec<SessionView>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<SessionId>,
    /// The stream sequence this page was read at.
    pub as_of_seq: u64,
}

struct Inner {
    path: PathBuf,
    /// The open store; replaced by an empty one when damage is found while running.
    current: RwLock<Arc<Db>>,
    /// The log the store follows, as recorded by [`Projections::bind`], for a replaced store.
    origin: std::sync::Mutex<Option<Vec<u8>>>,
    applied: watch::Sender<u64>,
    /// Held while a batch is applied, the store dumped or replaced, so a dump sees whole batches
    /// only.
    writing: std::sync::Mutex<()>,
    health: Health,
}

/// The projections: a cheap, clonable handle.
#[derive(Clone)]
pub struct Projections {
    inner: Arc<Inner>,
}

impl Projections {
    /// Opens the store in `dir`. A store of another version is cleared, and one that cannot be
    /// opened or fails the scan at open ([`super::health`]) is moved aside to `<dir>.damaged` and
    /// replaced by an empty one: either way it must be rebuilt from the log (the caller's projector
    /// does it from checkpoint 0). A store held by another process is an error, never cleared.
    pub fn open(dir: &Path) -> Result<(Self, Opened), ProjectionError> {
        let (db, opened, rebuilt) = opening::open(dir)?;
        let checkpoint = match &opened {
            Opened::Resumed { checkpoint } => *checkpoint,
            _ => 0,
        };
        let (applied, _) = watch::channel(checkpoint);
        let health = Health::default();
        if let Some(why) = rebuilt {
            health.count(why);
            // A damaged store is rebuilt before reads are served (the projector learns the target).
            if matches!(why, Rebuild::Unreadable | Rebuild::Corrupt) {
                health.start_rebuild();
            }
        }
        Ok((
            Self {
                inner: Arc::new(Inner {
                    path: dir.to_path_buf(),
                    current: RwLock::new(Arc::new(db)),
                    origin: Default::default(),
                    applied,
                    writing: std::sync::Mutex::new(()),
                    health,
                }),
            },
            opened,
        ))
    }

    /// The open store.
    fn db(&self) -> Arc<Db> {
        // Only replaced whole, never left half-written: a poisoned lock holds a valid store.
        self.inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs a read on the open store. Refused while a rebuild runs; damage met is reported (and
    /// answered as [`ProjectionError::Corrupt`]), a panic inside sled included.
    fn read<T>(
        &self,
        f: impl FnOnce(&sled::Tree) -> Result<T, ProjectionError>,
    ) -> Result<T, ProjectionError> {
        // The store first, then the check: a replacement marks the rebuild before it swaps the
        // store, so a read that got the new, empty store always sees the mark.
        let db = self.db();
        if let Some(target) = self.inner.health.rebuilding() {
            return Err(ProjectionError::Rebuilding {
                reached: self.checkpoint(),
                target,
            });
        }
        let read = catch_unwind(AssertUnwindSafe(|| f(&db.tree))).unwrap_or_else(|panic| {
            Err(ProjectionError::Corrupt {
                key: "(unknown)".into(),
                reason: format!("sled panicked: {}", opening::panic_message(&*panic)),
            })
        });
        if let Err(e) = &read {
            if e.is_damage() {
                self.inner.health.report(&e.to_string());
            }
        }
        read
    }

    /// Ties the store to the log it follows. A store built from another log (another cell or
    /// stream, a stream deleted and created again, a stream shorter than the store's checkpoint), or
    /// one that does not say which (written by an earlier release), is cleared to be rebuilt from
    /// this one: `Some` says why. A fresh store records the log and answers `None`.
    pub fn bind(&self, log: &LogIdentity) -> Result<Option<Opened>, ProjectionError> {
        let origin = Origin {
            cell: log.cell.to_string(),
            stream: log.stream.clone(),
            created: log.created,
        };
        let checkpoint = self.checkpoint();
        let tree = self.db().tree.clone();
        let found: Option<Origin> = tree
            .get(ORIGIN_KEY)?
            .and_then(|b| postcard::from_bytes(&b).ok());
        let reason = match &found {
            Some(f) if f.cell != origin.cell => Some(format!(
                "it was built for cell {}, this is cell {}",
                f.cell, origin.cell
            )),
            Some(f) if f.stream != origin.stream || f.created != origin.created => Some(format!(
                "it was built from stream {} created at {} ns, this one was created at {} ns",
                f.stream, f.created, origin.created
            )),
            _ if checkpoint > log.last_seq => Some(format!(
                "its checkpoint {checkpoint} is past the end of the log ({})",
                log.last_seq
            )),
            None if checkpoint > 0 => Some("it does not say which log it was built from".into()),
            _ => None,
        };
        if reason.is_some() {
            tree.remove(ORIGIN_KEY)?;
            self.clear()?;
            self.inner.health.count(Rebuild::OtherLog);
        }
        // A plain struct of strings and an integer: postcard encoding cannot fail.
        let bytes = postcard::to_stdvec(&origin).expect("an origin always encodes");
        tree.insert(ORIGIN_KEY, bytes.clone())?;
        tree.flush()?;
        *self.inner.origin.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
        Ok(reason.map(|reason| {
            tracing::warn!(%reason, "projection store of another log: rebuilding");
            Opened::OtherLog { reason }
        }))
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The last stream sequence applied.
    pub fn checkpoint(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// Follows the checkpoint as it moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.applied.subscribe()
    }

    /// Applies consecutive events in one atomic sled batch together with the checkpoint. The first
    /// event must directly follow the checkpoint, and each the one before it: a gap or a repeat is an
    /// error, never skipped.
    pub fn apply_batch(&self, events: &[apply::Message]) -> Result<(), ProjectionError> {
        if events.is_empty() {
            return Ok(());
        }
        let _writing = self.lock();
        let db = self.db();
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let mut overlay = Overlay::new(&db.tree);
            let next = overlay.apply_all(self.checkpoint() + 1, events)?;
            let mut batch = sled::Batch::default();
            for (k, v) in overlay.into_writes() {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            db.tree.apply_batch(batch)?;
            Ok(next)
        }))
        .unwrap_or_else(|panic| {
            Err(ProjectionError::Corrupt {
                key: "(unknown)".into(),
                reason: format!("sled panicked: {}", opening::panic_message(&*panic)),
            })
        });
        let next = match applied {
            Ok(next) => next,
            Err(e) => {
                if e.is_damage() {
                    self.inner.health.report(&e.to_string());
                }
                return Err(e);
            }
        };
        self.inner.applied.send_replace(next - 1);
        self.inner.health.applied(next - 1);
        Ok(())
    }

    /// Clears every read model and the checkpoint, for a rebuild.
    pub fn clear(&self) -> Result<(), ProjectionError> {
        let _writing = self.lock();
        let tree = self.db().tree.clone();
        // Which log the store follows survives: a rebuild is of the same log.
        let origin = tree.get(ORIGIN_KEY)?;
        tree.clear()?;
        tree.insert(VERSION_KEY, &PROJECTION_VERSION.to_be_bytes())?;
        if let Some(origin) = origin {
            tree.insert(ORIGIN_KEY, origin)?;
        }
        self.inner.applied.send_replace(0);
        Ok(())
    }

    /// Replaces a store found damaged while running (`reason`) by an empty one, to be rebuilt from
    /// the log: the damaged one is moved aside ([`super::open`]), reads are refused until the
    /// rebuild reaches the log's end ([`Projections::rebuilding_to`]), and the rebuild is counted.
    /// The projector calls it; it then follows the log from sequence 1.
    pub fn replace_damaged(&self, reason: &str) -> Result<(), ProjectionError> {
        let _writing = self.lock();
        tracing::warn!(path = %self.inner.path.display(), %reason, "projection store damaged while running: moving it aside and rebuilding it from the log");
        self.inner.health.start_rebuild();
        let db = match opening::move_aside_and_create(&self.inner.path) {
            Ok(db) => db,
            Err(e) => {
                // Still damaged: the next projector (restarted by serve) tries again.
                self.inner.health.report(reason);
                return Err(e);
            }
        };
        let origin = self
            .inner
            .origin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(origin) = origin {
            db.tree.insert(ORIGIN_KEY, origin)?;
        }
        db.tree.flush()?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(db);
        self.inner.applied.send_replace(0);
        self.inner.health.count(Rebuild::Corrupt);
        Ok(())
    }

    /// Damage reported by a read or a batch and not yet repaired, taken: the projector then calls
    /// [`Projections::replace_damaged`].
    pub fn take_damage(&self) -> Option<String> {
        self.inner.health.take()
    }

    /// Resolves when damage is reported (at once if some is pending).
    pub async fn damaged(&self) {
        if self.inner.health.is_damaged() {
            return;
        }
        self.inner.health.notify.notified().await;
    }

    /// Whether a rebuild after damage waits to be told where the log ends.
    pub fn rebuild_target_unknown(&self) -> bool {
        self.inner.health.target_unknown()
    }

    /// Whether a rebuild runs and reads are refused until it reaches its target.
    pub fn is_rebuilding(&self) -> bool {
        self.inner.health.rebuilding().is_some()
    }

    /// The end of the log a rebuild after damage must reach before reads are served again.
    pub fn rebuilding_to(&self, last: u64) {
        self.inner.health.rebuilding_to(last, self.checkpoint());
    }

    /// Rebuilds from the log so far, by reason, for `orch_projection_rebuilds_total` (every
    /// reason, zeros included).
    pub fn rebuilds(&self) -> Vec<(&'static str, u64)> {
        self.inner
            .health
            .rebuilds()
            .into_iter()
            .map(|(r, n)| (r.as_str(), n))
            .collect()
    }

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<(), ProjectionError> {
        let db = self.db();
        db.db.flush_async().await?;
        Ok(())
    }

    /// Waits until the checkpoint reaches `seq` (read-your-writes), at most `timeout`.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> Result<u64, ProjectionError> {
        let mut rx = self.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|s| *s >= seq)).await;
        match reached {
            Ok(Ok(s)) => Ok(*s),
            _ => Err(ProjectionError::Timeout {
                wanted: seq,
                reached: self.checkpoint(),
            }),
        }
    }

    /// One session.
    pub fn session(&self, id: &SessionId) -> Result<Option<SessionView>, ProjectionError> {
        self.read(|t| session_in(t, id))
    }

    /// One VM.
    pub fn vm(&self, id: &VmId) -> Result<Option<VmView>, ProjectionError> {
        self.read(|t| {
            let key = keys::vm_key(id);
            let Some(b) = t.get(&key)? else {
                return Ok(None);
            };
            let view: VmView = decode(&key, &b)?;
            if !health::vm_key_matches(&key, &view) {
                return Err(misplaced(&key));
            }
            Ok(Some(view))
        })
    }

    /// Every VM, sorted by id.
    pub fn vms(&self) -> Result<Vec<VmView>, ProjectionError> {
        self.read(vms_in)
    }

    /// Sessions matching `filter`, sorted by id, after `after`, at most `limit`.
    pub fn sessions(
        &self,
        filter: &SessionFilter,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<SessionPage, ProjectionError> {
        let as_of_seq = self.checkpoint();
        self.read(|t| sessions_in(t, filter, after, limit, as_of_seq))
    }

    /// Capacity and session counts.
    pub fn capacity(&self) -> Result<Capacity, ProjectionError> {
        let as_of_seq = self.checkpoint();
        self.read(|t| capacity_in(t, as_of_seq))
    }

    /// A queued session's position in the placement queue (1: next to be placed), or `None` when
    /// it is not queued.
    pub fn queue_position(&self, view: &SessionView) -> Result<Option<u64>, ProjectionError> {
        self.read(|t| queue_position_in(t, view))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is (): a panic while holding it leaves nothing inconsistent.
        self.inner.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every key and value, with the checkpoint they are at, for `verify`. Blocks batches while it
    /// reads, so it sees whole batches only. Refused while a rebuild runs; damage met is reported.
    pub fn dump(&self) -> Result<(u64, Dump), ProjectionError> {
        let _writing = self.lock();
        let checkpoint = self.checkpoint();
        // The origin says which log the store follows; it is not a read model.
        let all = self.read(|t| {
            t.iter()
                .filter(|kv| kv.as_ref().map_or(true, |(k, _)| k.as_ref() != ORIGIN_KEY))
                .map(|kv| {
                    kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .map_err(Into::into)
                })
                .collect::<Result<_, ProjectionError>>()
        })?;
        Ok((checkpoint, all))
    }

    /// The sled tree itself, for tests that damage a store under a running projector. Never use
    /// it to read or write read models.
    #[doc(hidden)]
    pub fn raw_tree(&self) -> sled::Tree {
        self.db().tree.clone()
    }
}

fn session_in(t: &sled::Tree, id: &SessionId) -> Result<Option<SessionView>, ProjectionError> {
    let key = keys::session_key(id);
    let Some(b) = t.get(&key)? else {
        return Ok(None);
    };
    let mut view: SessionView = decode(&key, &b)?;
    if !health::session_key_matches(&key, &view) {
        return Err(misplaced(&key));
    }
    view.queue_position = queue_position_in(t, &view)?;
    Ok(Some(view))
}

fn vms_in(t: &sled::Tree) -> Result<Vec<VmView>, ProjectionError> {
    t.scan_prefix(b"m:")
        .map(|kv| {
            let (k, v) = kv?;
            let view: VmView = decode(&k, &v)?;
            if !health::vm_key_matches(&k, &view) {
                return Err(misplaced(&k));
            }
            Ok(view)
        })
        .collect()
}

fn sessions_in(
    t: &sled::Tree,
    filter: &SessionFilter,
    after: Option<&SessionId>,
    limit: usize,
    as_of_seq: u64,
) -> Result<SessionPage, ProjectionError> {
    // Ended sessions have no status index: they are listed from the views themselves.
    let prefix = if let Some(u) = &filter.user_id {
        keys::user_prefix(u)
    } else if let Some(vm) = &filter.vm_id {
        keys::vm_sessions_prefix(vm)
    } else if let Some(s) = filter.status.filter(|s| keys::status_indexed(*s)) {
        keys::status_prefix(s)
    } else {
        SESSIONS_PREFIX.to_vec()
    };
    let views = prefix == SESSIONS_PREFIX;
    let start = match after {
        Some(a) => [prefix.as_slice(), a.as_str().as_bytes(), b"\0"].concat(),
        None => prefix.clone(),
    };
    let mut sessions = Vec::new();
    let mut next = None;
    for kv in t.range(start..) {
        let (k, v) = kv?;
        let Some(id) = k.strip_prefix(prefix.as_slice()) else {
            break;
        };
        let view = if views {
            let mut view: SessionView = decode(&k, &v)?;
            if !health::session_key_matches(&k, &view) {
                return Err(misplaced(&k));
            }
            view.queue_position = queue_position_in(t, &view)?;
            view
        } else {
            let id = SessionId::parse(String::from_utf8_lossy(id).into_owned()).map_err(|e| {
                ProjectionError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                }
            })?;
            // An index key whose session is gone is damage: the two are written in one batch.
            let Some(view) = session_in(t, &id)? else {
                return Err(ProjectionError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "an index key of a session the store does not hold".into(),
                });
            };
            view
        };
        let keep = filter.user_id.as_ref().is_none_or(|u| &view.user_id == u)
            && filter.status.is_none_or(|s| view.status == s)
            && filter
                .vm_id
                .as_ref()
                .is_none_or(|v| view.vm_id.as_ref() == Some(v) && view.status.holds_slot());
        if !keep {
            continue;
        }
        if sessions.len() == limit {
            next = sessions.last().map(|s: &SessionView| s.session_id.clone());
            break;
        }
        sessions.push(view);
    }
    Ok(SessionPage {
        sessions,
        next,
        as_of_seq,
    })
}

fn capacity_in(t: &sled::Tree, as_of_seq: u64) -> Result<Capacity, ProjectionError> {
    let mut c = Capacity {
        as_of_seq,
        ..Capacity::default()
    };
    for vm in vms_in(t)? {
        match vm.status {
            VmStatus::Available => {
                c.vms_available += 1;
                c.placeable += u64::from(vm.free);
            }
            VmStatus::Draining => c.vms_draining += 1,
            VmStatus::Retired => {
                c.vms_retired += 1;
                continue;
            }
            VmStatus::Lost => {
                c.vms_lost += 1;
                continue;
            }
        }
        c.capacity += u64::from(vm.capacity);
        c.used += u64::from(vm.used);
    }
    for s in SessionStatus::ALL {
        let key = keys::count_key(s);
        *c.sessions.get_mut(s) = match t.get(&key)? {
            Some(b) => counter(&key, &b)?,
            None => 0,
        };
    }
    for kv in t.scan_prefix(b"r:") {
        let (k, v) = kv?;
        let reason = String::from_utf8_lossy(&k[2..]).into_owned();
        c.ended_by_reason.insert(reason, counter(&k, &v)?);
    }
    c.queued = t.scan_prefix(b"q:").count() as u64;
    if let Some(first) = t.scan_prefix(b"q:").next() {
        let (_, id) = first?;
        let id = SessionId::parse(String::from_utf8_lossy(&id).into_owned()).map_err(|e| {
            ProjectionError::Corrupt {
                key: "q:".into(),
                reason: e.to_string(),
            }
        })?;
        c.oldest_queued_since = session_in(t, &id)?.and_then(|s| s.queued).map(|q| q.since);
    }
    Ok(c)
}

fn queue_position_in(t: &sled::Tree, view: &SessionView) -> Result<Option<u64>, ProjectionError> {
    let Some(q) = view.queued else {
        return Ok(None);
    };
    let ahead = t.range(keys::queue_key(0)..keys::queue_key(q.seq)).count() as u64;
    Ok(Some(ahead + 1))
}

/// A counter's value: 8 bytes, big-endian.
fn counter(key: &[u8], bytes: &[u8]) -> Result<u64, ProjectionError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| ProjectionError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: format!("a counter of {} bytes", bytes.len()),
        })
}

fn misplaced(key: &[u8]) -> ProjectionError {
    ProjectionError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "the view under it is of another id".into(),
    }
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}
