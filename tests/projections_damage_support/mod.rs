//! Shared by the damaged-projection-store tests (`tests/projections_damage_*.rs`): a seeded
//! generator of offsets, the damages (truncated, flipped, deleted sled files), the workload, and the
//! check that a store ends equal to a replay of the log.
#![allow(dead_code, unused_imports)]

pub use std::path::PathBuf;

pub use crate::faults_support::{
    accepted, assign, cell, end, register, send_until_answered, start, CommandClient, Duration,
    Instant, Path, Reader,
};
pub use orchestrator::projections::{projector, Opened, Projections};
pub use serde_json::{json, Value};
pub use tokio_util::sync::CancellationToken;

/// A small generator for the offsets: the same every run.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The files of a sled store whose name starts with `prefix`.
pub fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found
}

pub fn truncate(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

pub fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    if bytes.is_empty() {
        return;
    }
    let at = (offset as usize).min(bytes.len() - 1);
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

/// One way to damage a closed store.
pub struct Damage {
    pub name: String,
    pub apply: Box<dyn Fn(&Path)>,
}

pub fn damage(name: impl Into<String>, apply: impl Fn(&Path) + 'static) -> Damage {
    Damage {
        name: name.into(),
        apply: Box::new(apply),
    }
}

/// Every damage of the closed store at `pristine` (its `db` file `len` bytes long).
pub fn damages(pristine: &Path) -> Vec<Damage> {
    let len = std::fs::metadata(pristine.join("db")).unwrap().len();
    let mut all = Vec::new();
    for cut in [
        0,
        1,
        20,
        512,
        len / 8,
        len / 4,
        len / 2,
        len * 3 / 4,
        len - 200,
        len - 1,
    ] {
        all.push(damage(
            format!("db truncated to {cut} of {len}"),
            move |d: &Path| truncate(&d.join("db"), cut),
        ));
    }
    let mut rng = Lcg(13);
    for _ in 0..16 {
        let at = rng.below(len);
        all.push(damage(format!("db byte {at} flipped"), move |d: &Path| {
            flip(&d.join("db"), at)
        }));
    }
    for at in [0u64, 8, 100, u64::MAX] {
        all.push(damage(
            format!("snapshot byte {at} flipped"),
            move |d: &Path| {
                for snap in files(d, "snap.") {
                    flip(&snap, at)
                }
            },
        ));
    }
    all.push(damage("snapshot truncated to half", |d: &Path| {
        for snap in files(d, "snap.") {
            let len = std::fs::metadata(&snap).unwrap().len();
            truncate(&snap, len / 2);
        }
    }));
    all.push(damage("conf overwritten", |d: &Path| {
        std::fs::write(d.join("conf"), b"\xffnot a sled config\x00\x01").unwrap()
    }));
    all.push(damage("whole directory deleted", |d: &Path| {
        std::fs::remove_dir_all(d).unwrap()
    }));
    all.push(damage("db deleted", |d: &Path| {
        std::fs::remove_file(d.join("db")).unwrap()
    }));
    all.push(damage("conf deleted", |d: &Path| {
        std::fs::remove_file(d.join("conf")).unwrap()
    }));
    all.push(damage("snapshots deleted", |d: &Path| {
        for snap in files(d, "snap.") {
            std::fs::remove_file(snap).unwrap();
        }
    }));
    all.push(damage("blobs deleted", |d: &Path| {
        let _ = std::fs::remove_dir_all(d.join("blobs"));
    }));
    all.push(damage("db and snapshots deleted, conf kept", |d: &Path| {
        std::fs::remove_file(d.join("db")).unwrap();
        for snap in files(d, "snap.") {
            std::fs::remove_file(snap).unwrap();
        }
    }));
    all
}

/// Sends a workload through the writer: VMs, sessions placed, some ended. Returns the last
/// sequence.
pub async fn workload(commands: &CommandClient) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let send = |id: String, command: orchestrator::domain::Command| async move {
        let reply = send_until_answered(commands, &id, &command, deadline).await;
        accepted(&reply).unwrap_or_else(|| panic!("{id}: {reply:?}"))
    };
    let mut last = 0;
    for v in 0..4 {
        last = send(format!("reg-{v}"), register(&format!("vm-{v}"), 20)).await;
    }
    for s in 0..60 {
        last = send(
            format!("start-{s}"),
            start(&format!("s{s}"), &format!("u{s}")),
        )
        .await;
        if s % 4 != 3 {
            last = send(format!("assign-{s}"), assign(&format!("s{s}"))).await;
        }
        if s % 3 == 0 {
            last = send(format!("end-{s}"), end(&format!("s{s}"))).await;
        }
    }
    last
}

/// Follows the log into `store` until it is at `last` and serves reads, then checks that it holds
/// exactly a replay of the log, and that reads through the store's API agree with it.
pub async fn assert_rebuilt_right(store: &Projections, reader: &Reader, last: u64, case: &str) {
    let stop = CancellationToken::new();
    let run = tokio::spawn(projector::run(reader.clone(), store.clone(), stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (checkpoint, live) = loop {
        match store.dump() {
            Ok((checkpoint, live)) if checkpoint == last => break (checkpoint, live),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "{case}: never caught up (at {})",
            store.checkpoint()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let expected = projector::replay_in_memory(reader, checkpoint)
        .await
        .unwrap();
    let (differences, lines) = projector::diff(&live, &expected, 10);
    assert_eq!(differences, 0, "{case}: {lines:#?}");
    let page = store
        .sessions(&Default::default(), None, 1000)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(page.sessions.len(), 60, "{case}");
    for view in &page.sessions {
        let read = store.session(&view.session_id).unwrap().unwrap();
        assert_eq!(&read, view, "{case}");
    }
    let capacity = store.capacity().unwrap();
    assert_eq!(
        capacity
            .sessions
            .get(orchestrator::domain::SessionStatus::Ended),
        20,
        "{case}"
    );
    assert_eq!(store.vms().unwrap().len(), 4, "{case}");
    stop.cancel();
    run.await.unwrap().unwrap();
}
