//! Operator checks over NATS: `verify` rebuilds in memory from the log and diffs the result against
//! the live projections and the writer's state.
//!
//! | subject | who answers | what |
//! |---|---|---|
//! | `orch.<cell>.admin.verify.projections` | each projector (one answers) | diff of its sled store against a replay |
//! | `orch.<cell>.admin.writer_state` | the active writer | its last sequence and state fingerprint |
//!
//! The writer answers with the state it has confirmed (nothing in flight); `verify` replays the log up
//! to that sequence and compares fingerprints, and checks the domain's invariants on the replay. It
//! also lists the messages every reader skips (foreign ones, quarantined ones and the quarantine
//! records, see [`crate::log::entry`]): they do not make the check fail, but an operator sees them.

use std::time::Duration;

use futures::StreamExt;
use orchestrator_events::CellId;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::domain::{DomainConfig, State};
use crate::log::{Entry, LogError, Reader, Skipped};
use crate::projections::{projector, Projections};
use crate::writer::recovery::fold;

/// The subject the projectors answer `verify` on.
pub fn projections_subject(cell: &CellId) -> String {
    format!("orch.{cell}.admin.verify.projections")
}

/// The subject the active writer answers with its state on.
pub fn writer_subject(cell: &CellId) -> String {
    format!("orch.{cell}.admin.writer_state")
}

/// The writer's answer: its confirmed state, summarised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterStateReport {
    /// The writer's holder id.
    pub holder: String,
    /// The domain tunables it decides with (a replay must use the same).
    pub config: DomainConfig,
    /// The last sequence folded into its state.
    pub last_seq: u64,
    /// [`State::fingerprint`].
    pub fingerprint: String,
    /// Sessions it knows.
    pub sessions: u64,
    /// VMs it knows.
    pub vms: u64,
}

impl WriterStateReport {
    /// Summarises a state.
    pub fn of(holder: &str, state: &State) -> Self {
        Self {
            holder: holder.to_owned(),
            config: state.config.clone(),
            last_seq: state.last_seq,
            fingerprint: state.fingerprint(),
            sessions: state.sessions.len() as u64,
            vms: state.vms.len() as u64,
        }
    }
}

/// A projector's answer: its store against a replay of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionReport {
    /// The checkpoint compared at.
    pub checkpoint: u64,
    /// Keys in the replay.
    pub keys: u64,
    /// How many keys differ.
    pub differences: u64,
    /// The first differences, readable.
    pub examples: Vec<String>,
    /// Set when the check itself failed.
    pub error: Option<String>,
}

/// Answers `verify` requests for a projector's store until `shutdown`.
pub async fn serve_projections(
    client: async_nats::Client,
    reader: Reader,
    store: Projections,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut sub = client.subscribe(projections_subject(reader.cell())).await?;
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = sub.next() => match m { Some(m) => m, None => return Ok(()) },
        };
        let Some(reply) = msg.reply else { continue };
        let report = check_projections(&reader, &store).await;
        // JSON: a report is plain data, encoding cannot fail.
        let body = serde_json::to_vec(&report).expect("a report always encodes");
        if let Err(e) = client.publish(reply, body.into()).await {
            tracing::warn!(error = %e, "answering verify");
        }
    }
}

/// Compares a store with a replay of the log up to the store's checkpoint.
pub async fn check_projections(reader: &Reader, store: &Projections) -> ProjectionReport {
    let mut report = ProjectionReport {
        checkpoint: 0,
        keys: 0,
        differences: 0,
        examples: Vec::new(),
        error: None,
    };
    let dumped = store.dump();
    let (checkpoint, live) = match dumped {
        Ok(d) => d,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.checkpoint = checkpoint;
    match projector::replay_in_memory(reader, checkpoint).await {
        Ok(expected) => {
            let (n, examples) = projector::diff(&live, &expected, 20);
            report.keys = expected.len() as u64;
            report.differences = n as u64;
            report.examples = examples;
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

/// A replay of the log into a fresh domain state.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The state.
    pub state: State,
    /// The first event that breaks a transition invariant, with its sequence.
    pub violation: Option<String>,
    /// The messages skipped on the way (foreign, quarantined, quarantine records).
    pub skipped: Vec<Skipped>,
}

/// Replays the log `1..=to` into a fresh domain state, checking every event against the
/// transition invariants on the way.
pub async fn replay_state(
    reader: &Reader,
    config: &DomainConfig,
    to: u64,
) -> Result<Replay, LogError> {
    let mut replay = Replay {
        state: State::new(config.clone()),
        violation: None,
        skipped: Vec::new(),
    };
    let mut entries = reader.entries_range(1, to).await?;
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        match &entry {
            Entry::Event(ev) if replay.violation.is_none() => {
                if let Err(v) =
                    crate::domain::invariants::check_transition(&replay.state, &ev.envelope.event)
                {
                    replay.violation = Some(format!("event at sequence {}: {v}", ev.seq));
                }
            }
            Entry::Event(_) => {}
            Entry::Skipped(s) => replay.skipped.push(s.clone()),
        }
        fold(&mut replay.state, &entry);
    }
    Ok(replay)
}

/// The outcome of `verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// The projector's report, if one answered.
    pub projections: Option<ProjectionReport>,
    /// The writer's state and whether a replay matches it.
    pub writer: Option<(WriterStateReport, Result<(), String>)>,
    /// What could not be checked, and why.
    pub unreachable: Vec<String>,
    /// The messages every reader skips, up to the writer's sequence.
    pub skipped: Vec<Skipped>,
}

impl VerifyReport {
    /// Everything answered and nothing diverges.
    pub fn is_clean(&self) -> bool {
        self.unreachable.is_empty()
            && self
                .projections
                .as_ref()
                .is_some_and(|p| p.differences == 0 && p.error.is_none())
            && self.writer.as_ref().is_some_and(|(_, r)| r.is_ok())
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.projections {
            Some(p) => {
                write!(
                    f,
                    "projections at seq {}: {} keys, {} differences",
                    p.checkpoint, p.keys, p.differences
                )?;
                if let Some(e) = &p.error {
                    write!(f, ", check failed: {e}")?;
                }
                writeln!(f)?;
                for line in &p.examples {
                    writeln!(f, "  {line}")?;
                }
            }
            None => writeln!(f, "projections: no answer")?,
        }
        match &self.writer {
            Some((w, Ok(()))) => writeln!(
                f,
                "writer {} at seq {}: state matches a replay ({} sessions, {} VMs)",
                w.holder, w.last_seq, w.sessions, w.vms
            )?,
            Some((w, Err(e))) => writeln!(
                f,
                "writer {} at seq {}: DIVERGES: {e}",
                w.holder, w.last_seq
            )?,
            None => writeln!(f, "writer: no answer")?,
        }
        for u in &self.unreachable {
            writeln!(f, "not checked: {u}")?;
        }
        if !self.skipped.is_empty() {
            writeln!(
                f,
                "skipped by every reader: {} messages",
                self.skipped.len()
            )?;
            for s in &self.skipped {
                writeln!(f, "  {} on {}: {}", s.seq, s.subject, s.why.describe())?;
            }
        }
        write!(
            f,
            "{}",
            if self.is_clean() {
                "verify: clean"
            } else {
                "verify: DIVERGENCE or incomplete check"
            }
        )
    }
}

/// Why `verify` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Asks the live projector and writer of `cell` and compares both with a replay of the log.
pub async fn verify(
    client: &async_nats::Client,
    cell: &CellId,
    timeout: Duration,
) -> Result<VerifyReport, AdminError> {
    let js = async_nats::jetstream::new(client.clone());
    let reader = Reader::new(js, cell.clone()).await?;
    let mut report = VerifyReport::default();
    let ask = |subject: String| {
        let client = client.clone();
        async move {
            let req = async_nats::Request::new().timeout(Some(timeout));
            client
                .send_request(subject, req)
                .await
                .map_err(|e| e.to_string())
        }
    };
    match ask(projections_subject(cell)).await {
        Ok(msg) => match serde_json::from_slice::<ProjectionReport>(&msg.payload) {
            Ok(p) => report.projections = Some(p),
            Err(e) => report
                .unreachable
                .push(format!("projections: bad answer: {e}")),
        },
        Err(e) => report.unreachable.push(format!("projections: {e}")),
    }
    match ask(writer_subject(cell)).await {
        Ok(msg) => match serde_json::from_slice::<WriterStateReport>(&msg.payload) {
            Ok(w) => {
                let Replay {
                    state: replay,
                    violation,
                    skipped,
                } = replay_state(&reader, &w.config, w.last_seq).await?;
                report.skipped = skipped;
                let mut outcome = Ok(());
                if let Some(v) = violation {
                    outcome = Err(format!("the log breaks an invariant: {v}"));
                } else if replay.last_seq != w.last_seq {
                    outcome = Err(format!(
                        "the log ends at {} before the writer's {}",
                        replay.last_seq, w.last_seq
                    ));
                } else if replay.fingerprint() != w.fingerprint {
                    outcome = Err(format!(
                        "fingerprint {} differs from the replay's {}",
                        w.fingerprint,
                        replay.fingerprint()
                    ));
                } else if let Err(v) = crate::domain::invariants::check(&replay) {
                    outcome = Err(format!("the replayed state breaks an invariant: {v}"));
                }
                report.writer = Some((w, outcome));
            }
            Err(e) => report.unreachable.push(format!("writer: bad answer: {e}")),
        },
        Err(e) => report.unreachable.push(format!("writer: {e}")),
    }
    Ok(report)
}
