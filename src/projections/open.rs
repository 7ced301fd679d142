//! Opening the sled store, and replacing a damaged one by an empty store to rebuild from the log.
//!
//! A store that cannot be opened (sled refuses it, or panics), or whose content fails the scan at
//! open ([`super::health::scan`]), is moved aside to `<dir>.damaged` (replacing an older one there,
//! kept for inspection only: deleting it loses nothing) and an empty store is created in its place.
//! A store of another layout version is cleared in place. Damage found while running is handled the
//! same way by [`super::Projections::replace_damaged`], which swaps the open store for an empty one
//! under the readers' feet: a read holds one store from its start to its end, so it never mixes
//! the two.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::health::{self, Rebuild};
use super::keys::{self, VERSION_KEY};
use super::store::Opened;
use super::{ProjectionError, PROJECTION_VERSION};

/// One open sled database and its tree of read models.
pub(super) struct Db {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
}

/// Opens sled in `dir` without its periodic flush: the projector flushes when it chooses (every
/// [`super::projector::FLUSH_EVERY`] while following, once at the end of a rebuild). A batch that
/// did not reach the disk before a crash is applied again from the log. A panic inside sled (it
/// asserts on some damaged files) is an error too.
fn open_db(dir: &Path) -> sled::Result<Db> {
    let opened = catch_unwind(|| {
        let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
        let tree = db.open_tree("projections")?;
        Ok(Db { db, tree })
    });
    match opened {
        Ok(opened) => opened,
        Err(panic) => Err(sled::Error::ReportableBug(format!(
            "sled panicked opening the store: {}",
            panic_message(&*panic)
        ))),
    }
}

/// What a caught panic said.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("lock"))
}

/// Where a damaged store is moved aside to.
pub(super) fn aside_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".damaged");
    dir.with_file_name(name)
}

/// Moves the store in `dir` aside (see the module's docs) and opens an empty one there.
pub(super) fn move_aside_and_create(dir: &Path) -> Result<Db, ProjectionError> {
    let aside = aside_path(dir);
    let io = |e: std::io::Error| ProjectionError::Sled(e.into());
    match std::fs::remove_dir_all(&aside) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    match std::fs::rename(dir, &aside) {
        // Deleted under a running store: nothing to move.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let db = open_db(dir)?;
    db.tree
        .insert(VERSION_KEY, &PROJECTION_VERSION.to_be_bytes())?;
    Ok(db)
}

/// Opens the store in `dir`: resumes it, or clears it (another version) or replaces it (damaged)
/// for a rebuild. A store held by another process is an error, never touched.
pub(super) fn open(dir: &Path) -> Result<(Db, Opened, Option<Rebuild>), ProjectionError> {
    let existed = dir.join("db").exists() || dir.join("conf").exists();
    let db = match open_db(dir) {
        Ok(db) => db,
        Err(e) if is_lock_error(&e) => {
            return Err(ProjectionError::Locked {
                path: dir.display().to_string(),
            })
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(path = %dir.display(), error = %reason, "projection store unreadable, moved aside, rebuilding");
            let db = move_aside_and_create(dir)?;
            return Ok((db, Opened::Unreadable { reason }, Some(Rebuild::Unreadable)));
        }
    };
    if !existed {
        db.tree
            .insert(VERSION_KEY, &PROJECTION_VERSION.to_be_bytes())?;
        return Ok((db, Opened::Created, None));
    }
    match check(&db.tree) {
        Ok(Checked::Sound) => {
            db.tree
                .insert(VERSION_KEY, &PROJECTION_VERSION.to_be_bytes())?;
            let checkpoint = db
                .tree
                .get(keys::CHECKPOINT_KEY)?
                .map(|b| keys::decode_u64(&b))
                .unwrap_or(0);
            Ok((db, Opened::Resumed { checkpoint }, None))
        }
        Ok(Checked::Version(found)) => {
            db.tree.clear()?;
            db.tree
                .insert(VERSION_KEY, &PROJECTION_VERSION.to_be_bytes())?;
            Ok((db, Opened::VersionChanged { found }, Some(Rebuild::Version)))
        }
        Err(reason) => {
            tracing::warn!(path = %dir.display(), %reason, "projection store damaged, moved aside, rebuilding");
            drop(db);
            let db = move_aside_and_create(dir)?;
            Ok((db, Opened::Corrupt { reason }, Some(Rebuild::Corrupt)))
        }
    }
}

enum Checked {
    /// Of this version, and it passed the scan.
    Sound,
    /// Of another version (not scanned: its layout is another).
    Version(u32),
}

/// The version check, then the scan of a store of this version. `Err`: what is damaged.
fn check(tree: &sled::Tree) -> Result<Checked, String> {
    let scanned = catch_unwind(AssertUnwindSafe(|| {
        let found = tree
            .get(VERSION_KEY)
            .map_err(|e| format!("reading the version: {e}"))?;
        match found.map(|v| v.as_ref().try_into().map(u32::from_be_bytes)) {
            Some(Ok(v)) if v != PROJECTION_VERSION => return Ok(Checked::Version(v)),
            Some(Ok(_)) => {}
            // An empty store (sled files of a store never written) is sound; one with data but no
            // version is not.
            None if tree.is_empty() => return Ok(Checked::Sound),
            None => return Err("no version key".to_owned()),
            Some(Err(_)) => return Err("malformed version key".to_owned()),
        }
        let started = std::time::Instant::now();
        health::scan(tree)?;
        tracing::info!(
            keys = tree.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "projection store scanned at open: sound"
        );
        Ok(Checked::Sound)
    }));
    scanned.unwrap_or_else(|panic| {
        Err(format!(
            "sled panicked reading it: {}",
            panic_message(&*panic)
        ))
    })
}
