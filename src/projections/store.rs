//! The sled store of the read models: atomic batches with the checkpoint, reads, read-your-writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use orchestrator_events::{SessionId, UserId, VmId};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::apply::{self, Kv, Overlay};
use super::keys::{self, CHECKPOINT_KEY, SESSIONS_PREFIX, VERSION_KEY};
use super::model::{Capacity, SessionView, VmView};
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
    /// It could not be read: deleted, to be rebuilt from the log.
    Unreadable {
        /// What was wrong.
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
const ORIGIN_KEY: &[u8] = b"_origin";

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
    db: sled::Db,
    tree: sled::Tree,
    applied: watch::Sender<u64>,
    /// Held while a batch is applied or the store dumped, so a dump sees whole batches only.
    writing: std::sync::Mutex<()>,
}

/// The projections: a cheap, clonable handle.
#[derive(Clone)]
pub struct Projections {
    inner: Arc<Inner>,
}

/// Opens sled in `dir` without its periodic flush: the projector flushes when it chooses (every
/// [`super::projector::FLUSH_EVERY`] while following, once at the end of a rebuild). A batch that
/// did not reach the disk before a crash is applied again from the log.
fn open_db(dir: &Path) -> sled::Result<sled::Db> {
    sled::Config::new().path(dir).flush_every_ms(None).open()
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("lock"))
}

impl Projections {
    /// Opens the store in `dir`. A store of another version, or one that cannot be read, is cleared
    /// and must be rebuilt from the log (the caller's projector does it from checkpoint 0). A store
    /// held by another process is an error, never cleared.
    pub fn open(dir: &Path) -> Result<(Self, Opened), ProjectionError> {
        let existed = dir.join("db").exists() || dir.join("conf").exists();
        let (db, mut opened) = match open_db(dir) {
            Ok(db) => (db, if existed { None } else { Some(Opened::Created) }),
            Err(e) if is_lock_error(&e) => {
                return Err(ProjectionError::Locked {
                    path: dir.display().to_string(),
                })
            }
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "projection store unreadable, rebuilding");
                std::fs::remove_dir_all(dir).map_err(|io| ProjectionError::Sled(io.into()))?;
                (
                    open_db(dir)?,
                    Some(Opened::Unreadable {
                        reason: e.to_string(),
                    }),
                )
            }
        };
        let tree = db.open_tree("projections")?;
        let found = tree.get(VERSION_KEY)?;
        let version = found
            .as_ref()
            .map(|v| v.as_ref().try_into().map(u32::from_be_bytes));
        match version {
            Some(Ok(v)) if v == PROJECTION_VERSION => {}
            None => {
                if !tree.is_empty() && opened.is_none() {
                    opened = Some(Opened::Unreadable {
                        reason: "no version key".into(),
                    });
                }
                tree.clear()?;
            }
            Some(Ok(v)) => {
                tree.clear()?;
                opened.get_or_insert(Opened::VersionChanged { found: v });
            }
            Some(Err(_)) => {
                tree.clear()?;
                opened.get_or_insert(Opened::Unreadable {
                    reason: "malformed version key".into(),
                });
            }
        }
        tree.insert(VERSION_KEY, &PROJECTION_VERSION.to_be_bytes())?;
        let checkpoint = tree
            .get(CHECKPOINT_KEY)?
            .map(|b| keys::decode_u64(&b))
            .unwrap_or(0);
        let opened = opened.unwrap_or(Opened::Resumed { checkpoint });
        let (applied, _) = watch::channel(checkpoint);
        Ok((
            Self {
                inner: Arc::new(Inner {
                    path: dir.to_path_buf(),
                    db,
                    tree,
                    applied,
                    writing: std::sync::Mutex::new(()),
                }),
            },
            opened,
        ))
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
        let found: Option<Origin> = self
            .inner
            .tree
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
            self.inner.tree.remove(ORIGIN_KEY)?;
            self.clear()?;
        }
        // A plain struct of strings and an integer: postcard encoding cannot fail.
        let bytes = postcard::to_stdvec(&origin).expect("an origin always encodes");
        self.inner.tree.insert(ORIGIN_KEY, bytes)?;
        self.inner.tree.flush()?;
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
        let mut overlay = Overlay::new(&self.inner.tree);
        let next = overlay.apply_all(self.checkpoint() + 1, events)?;
        let mut batch = sled::Batch::default();
        for (k, v) in overlay.into_writes() {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.inner.tree.apply_batch(batch)?;
        self.inner.applied.send_replace(next - 1);
        Ok(())
    }

    /// Clears every read model and the checkpoint, for a rebuild.
    pub fn clear(&self) -> Result<(), ProjectionError> {
        let _writing = self.lock();
        // Which log the store follows survives: a rebuild is of the same log.
        let origin = self.inner.tree.get(ORIGIN_KEY)?;
        self.inner.tree.clear()?;
        self.inner
            .tree
            .insert(VERSION_KEY, &PROJECTION_VERSION.to_be_bytes())?;
        if let Some(origin) = origin {
            self.inner.tree.insert(ORIGIN_KEY, origin)?;
        }
        self.inner.applied.send_replace(0);
        Ok(())
    }

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<(), ProjectionError> {
        self.inner.db.flush_async().await?;
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

    fn get_as<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ProjectionError> {
        self.inner
            .tree
            .get(key)?
            .map(|b| decode(key, &b))
            .transpose()
    }

    /// One session.
    pub fn session(&self, id: &SessionId) -> Result<Option<SessionView>, ProjectionError> {
        let Some(mut view) = self.get_as::<SessionView>(&keys::session_key(id))? else {
            return Ok(None);
        };
        view.queue_position = self.queue_position(&view)?;
        Ok(Some(view))
    }

    /// One VM.
    pub fn vm(&self, id: &VmId) -> Result<Option<VmView>, ProjectionError> {
        self.get_as(&keys::vm_key(id))
    }

    /// Every VM, sorted by id.
    pub fn vms(&self) -> Result<Vec<VmView>, ProjectionError> {
        self.inner
            .tree
            .scan_prefix(b"m:")
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Sessions matching `filter`, sorted by id, after `after`, at most `limit`.
    pub fn sessions(
        &self,
        filter: &SessionFilter,
        after: Option<&SessionId>,
        limit: usize,
    ) -> Result<SessionPage, ProjectionError> {
        let as_of_seq = self.checkpoint();
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
        for kv in self.inner.tree.range(start..) {
            let (k, v) = kv?;
            let Some(id) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let view = if views {
                let mut view: SessionView = decode(&k, &v)?;
                view.queue_position = self.queue_position(&view)?;
                view
            } else {
                let id =
                    SessionId::parse(String::from_utf8_lossy(id).into_owned()).map_err(|e| {
                        ProjectionError::Corrupt {
                            key: String::from_utf8_lossy(&k).into_owned(),
                            reason: e.to_string(),
                        }
                    })?;
                let Some(view) = self.session(&id)? else {
                    continue;
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

    /// Capacity and session counts.
    pub fn capacity(&self) -> Result<Capacity, ProjectionError> {
        let mut c = Capacity {
            as_of_seq: self.checkpoint(),
            ..Capacity::default()
        };
        for vm in self.vms()? {
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
            *c.sessions.get_mut(s) = self
                .inner
                .tree
                .get(keys::count_key(s))?
                .map(|b| keys::decode_u64(&b))
                .unwrap_or(0);
        }
        for kv in self.inner.tree.scan_prefix(b"r:") {
            let (k, v) = kv?;
            let reason = String::from_utf8_lossy(&k[2..]).into_owned();
            c.ended_by_reason.insert(reason, keys::decode_u64(&v));
        }
        c.queued = self.inner.tree.scan_prefix(b"q:").count() as u64;
        if let Some(first) = self.inner.tree.scan_prefix(b"q:").next() {
            let (_, id) = first?;
            let id = SessionId::parse(String::from_utf8_lossy(&id).into_owned()).map_err(|e| {
                ProjectionError::Corrupt {
                    key: "q:".into(),
                    reason: e.to_string(),
                }
            })?;
            c.oldest_queued_since = self.session(&id)?.and_then(|s| s.queued).map(|q| q.since);
        }
        Ok(c)
    }

    /// A queued session's position in the placement queue (1: next to be placed), or `None` when
    /// it is not queued.
    pub fn queue_position(&self, view: &SessionView) -> Result<Option<u64>, ProjectionError> {
        let Some(q) = view.queued else {
            return Ok(None);
        };
        let ahead = self
            .inner
            .tree
            .range(keys::queue_key(0)..keys::queue_key(q.seq))
            .count() as u64;
        Ok(Some(ahead + 1))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is (): a panic while holding it leaves nothing inconsistent.
        self.inner.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every key and value, with the checkpoint they are at, for `verify`. Blocks batches while it
    /// reads, so it sees whole batches only.
    pub fn dump(&self) -> Result<(u64, Dump), ProjectionError> {
        let _writing = self.lock();
        let checkpoint = self.checkpoint();
        // The origin says which log the store follows; it is not a read model.
        let all = self
            .inner
            .tree
            .iter()
            .filter(|kv| kv.as_ref().map_or(true, |(k, _)| k.as_ref() != ORIGIN_KEY))
            .map(|kv| {
                kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(Into::into)
            })
            .collect::<Result<_, ProjectionError>>()?;
        Ok((checkpoint, all))
    }
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}
