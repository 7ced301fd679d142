//! The writer lease: one active writer per cell, chosen through a JetStream KV bucket.
//!
//! The key `writer.<cell>` holds `{holder, expires_at_ms, ttl_ms}` as JSON. Every change is a
//! compare-and-set on the key's revision (`Nats-Expected-Last-Subject-Sequence`), so two
//! candidates can never both win. A candidate takes the lease when the key is absent, released
//! (`expires_at_ms == 0`), expired by the wall clock, or unchanged for a whole TTL on its own
//! monotonic clock (which protects against a candidate whose wall clock lags). The holder renews
//! every [`renew_every`] (TTL/3); a renewal whose revision no longer matches means someone else
//! took over: [`LeaseError::Lost`]. A holder that cannot renew before its local deadline (last
//! successful renewal's send time + TTL) also counts the lease as lost. A stale writer that missed
//! all this is still fenced by the expected-sequence check on appends: the lease only limits how
//! long two writers overlap, it is not what keeps the log consistent.
//!
//! # Timing
//!
//! A standby looks at the key every [`poll_every`] (TTL/10). After the holder dies (without
//! releasing: `kill -9`, a lost machine) the lease expires TTL after its last renewal, which came
//! TTL/3 at most before the death, so a standby takes it between 2/3 TTL and TTL + TTL/10 after the
//! death: 0.67 to 1.1 s at the default TTL of 1 s ([`DEFAULT_LEASE_TTL`]). A holder that releases
//! (a graceful stop) hands over within one poll.
//!
//! The price of a short TTL: a holder that cannot renew for a whole TTL (the process paused or
//! starved of CPU for about 2/3 TTL across a renewal, the KV write slowed by a struggling server,
//! a partition from NATS) loses the lease. That is safe (it stops deciding, and anything it still
//! appends is refused by the expected-sequence check) but costs a failover: the commands in flight
//! are answered `unavailable` and retried against the new writer. The wall-clock rule also
//! assumes the hosts' clocks agree to well within TTL - TTL/3 (0.67 s at the default): a standby
//! whose clock runs further ahead takes a live lease once (safe, one needless failover; the old
//! holder, now behind, does not take it back by the wall clock). Raise `--lease-ttl` where pauses or
//! clock skew of that order are expected; the takeover time grows with it.
//!
//! async-nats' `create_key_value` fails against 2.9 servers, so [`ensure_lease_bucket`] creates the
//! bucket's stream by hand (the layout KV clients expect) and opens it with `get_key_value`.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    kv::{CreateErrorKind, Entry, Operation, Store, UpdateErrorKind},
    stream::{Config, DiscardPolicy, RetentionPolicy, StorageType},
};
use bytes::Bytes;
use orchestrator_events::CellId;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::log::stream::ensure_stream_config;
use crate::log::{LeaseError, LogError};

mod handle;
pub use handle::LeaseHandle;

/// The KV bucket holding the writer leases of every cell.
pub const DEFAULT_LEASE_BUCKET: &str = "orch_leases";

/// How long a lease lasts without renewal: a standby takes over 0.67 to 1.1 s after the holder
/// died (see the module's [timing](self#timing)).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(1);

/// How often a holder renews a lease of `ttl`: every third of it, so that a renewal that fails
/// is retried (every TTL/10) for two thirds of a TTL before the lease is lost.
pub fn renew_every(ttl: Duration) -> Duration {
    ttl / 3
}

/// How often a standby looks at a lease of `ttl` (at least every 10 ms): every tenth of it, which
/// adds at most a tenth to the takeover.
pub fn poll_every(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(10))
}

/// Creates the lease bucket's stream if needed (checking an existing one like
/// [`crate::log::ensure_stream`] does) and opens the bucket.
pub async fn ensure_lease_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<Store, LogError> {
    let config = Config {
        name: format!("KV_{bucket}"),
        description: Some("session orchestrator: writer leases".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        discard: DiscardPolicy::New,
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        max_messages: -1,
        max_bytes: -1,
        ..Default::default()
    };
    ensure_stream_config(js, config).await?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| LogError::Jetstream(format!("opening KV bucket {bucket}: {e}")))
}

/// The KV key of a cell's writer lease.
pub fn lease_key(cell: &CellId) -> String {
    format!("writer.{cell}")
}

/// What the lease key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    holder: String,
    /// Wall-clock expiry in milliseconds since the Unix epoch; 0 when released.
    expires_at_ms: i64,
    ttl_ms: u64,
}

impl Record {
    fn encode(&self) -> Bytes {
        // A struct of a string and two integers always serialises.
        Bytes::from(serde_json::to_vec(self).expect("a lease record always serialises"))
    }

    fn decode(entry: &Entry) -> Result<Self, LeaseError> {
        serde_json::from_slice(&entry.value).map_err(|e| LeaseError::Corrupt {
            key: entry.key.clone(),
            reason: e.to_string(),
        })
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// A held writer lease. Renew it every [`renew_every`] ([`Lease::keep_alive`] does), or it lapses.
#[derive(Debug)]
pub struct Lease {
    kv: Store,
    key: String,
    holder: String,
    ttl: Duration,
    revision: u64,
    deadline: Instant,
    /// Values sent whose ack never came (they may be stored), with when they were sent.
    unacked: Vec<(Bytes, Instant)>,
}

impl Lease {
    /// Takes `cell`'s lease for `holder` if it is free now (absent, released or expired by the
    /// wall clock); `Ok(None)` when someone else holds it.
    pub async fn try_acquire(
        kv: &Store,
        cell: &CellId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        attempt(kv, &lease_key(cell), holder, ttl, &mut None).await
    }

    /// Waits until `holder` gets `cell`'s lease, polling every [`poll_every`]. A lease that stays unchanged
    /// for a whole TTL (on this process's clock) counts as expired even if the wall clock says
    /// otherwise. Fails with [`LeaseError::Cancelled`] when `cancel` fires first.
    pub async fn acquire(
        kv: &Store,
        cell: &CellId,
        holder: &str,
        ttl: Duration,
        cancel: &CancellationToken,
    ) -> Result<Lease, LeaseError> {
        let key = lease_key(cell);
        let poll = poll_every(ttl);
        let mut observed = None;
        loop {
            match attempt(kv, &key, holder, ttl, &mut observed).await {
                Ok(Some(lease)) => return Ok(lease),
                Ok(None) => {}
                Err(LeaseError::Unavailable(reason)) => {
                    tracing::warn!(%reason, "writer lease: NATS unavailable, retrying");
                }
                Err(err) => return Err(err),
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(LeaseError::Cancelled),
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Who holds this lease.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The lease key's current revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The lease's time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// When this holder must consider the lease lost unless it renews first (monotonic clock).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the local deadline has not passed yet.
    pub fn is_current(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// Extends the lease by a TTL. [`LeaseError::Lost`] when someone else took it over (or the
    /// deadline passed while NATS was unreachable); [`LeaseError::Unavailable`] is worth retrying
    /// until [`Lease::deadline`].
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        let record = Record {
            holder: self.holder.clone(),
            expires_at_ms: now_ms().saturating_add_unsigned(ttl_ms(self.ttl)),
            ttl_ms: ttl_ms(self.ttl),
        };
        match self.cas(record.encode()).await {
            Err(LeaseError::Unavailable(_)) if !self.is_current() => {
                Err(LeaseError::Lost { holder: None })
            }
            other => other,
        }
    }

    /// Gives the lease up so that a standby takes over at once (graceful shutdown). Succeeds too
    /// when the lease was already lost.
    pub async fn release(mut self) -> Result<(), LeaseError> {
        let record = Record {
            holder: self.holder.clone(),
            expires_at_ms: 0,
            ttl_ms: ttl_ms(self.ttl),
        };
        match self.cas(record.encode()).await {
            Ok(()) | Err(LeaseError::Lost { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Hands the lease to a background task that renews it every [`renew_every`] and fires
    /// [`LeaseHandle::lost`] when it is lost.
    pub fn keep_alive(self) -> LeaseHandle {
        LeaseHandle::spawn(self)
    }

    /// Writes `value` if the key is still at our revision.
    async fn cas(&mut self, value: Bytes) -> Result<(), LeaseError> {
        let sent = Instant::now();
        // Twice at most: once more after finding that an earlier, unacknowledged write landed.
        for _ in 0..2 {
            match self
                .kv
                .update(&self.key, value.clone(), self.revision)
                .await
            {
                Ok(revision) => {
                    self.revision = revision;
                    self.deadline = sent + self.ttl;
                    self.unacked.clear();
                    return Ok(());
                }
                Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {
                    let entry = read(&self.kv, &self.key).await?;
                    let landed = entry.as_ref().and_then(|e| {
                        self.unacked
                            .iter()
                            .find(|(v, _)| *v == e.value && e.operation == Operation::Put)
                            .map(|(_, at)| (e.revision, *at))
                    });
                    match landed {
                        Some((revision, at)) => {
                            self.revision = revision;
                            self.deadline = at + self.ttl;
                            self.unacked.clear();
                        }
                        None => {
                            let holder = entry
                                .as_ref()
                                .and_then(|e| Record::decode(e).ok())
                                .map(|r| r.holder);
                            return Err(LeaseError::Lost { holder });
                        }
                    }
                }
                Err(err) if err.kind() == UpdateErrorKind::TimedOut => {
                    self.unacked.push((value, sent));
                    return Err(LeaseError::Unavailable(err.to_string()));
                }
                Err(err) => return Err(LeaseError::Jetstream(err.to_string())),
            }
        }
        Err(LeaseError::Jetstream(format!(
            "lease {} keeps changing under its holder",
            self.key
        )))
    }
}

/// The key's current entry, `None` when it has none.
async fn read(kv: &Store, key: &str) -> Result<Option<Entry>, LeaseError> {
    kv.entry(key).await.map_err(|err| match err.kind() {
        jetstream::kv::EntryErrorKind::TimedOut => LeaseError::Unavailable(err.to_string()),
        _ => LeaseError::Jetstream(err.to_string()),
    })
}

/// One attempt to take the lease. `observed` remembers the revision seen first and when, across
/// the attempts of one [`Lease::acquire`].
async fn attempt(
    kv: &Store,
    key: &str,
    holder: &str,
    ttl: Duration,
    observed: &mut Option<(u64, Instant)>,
) -> Result<Option<Lease>, LeaseError> {
    let record = Record {
        holder: holder.to_owned(),
        expires_at_ms: now_ms().saturating_add_unsigned(ttl_ms(ttl)),
        ttl_ms: ttl_ms(ttl),
    };
    let sent = Instant::now();
    let lease = |revision| Lease {
        kv: kv.clone(),
        key: key.to_owned(),
        holder: holder.to_owned(),
        ttl,
        revision,
        deadline: sent + ttl,
        unacked: Vec::new(),
    };
    let entry = read(kv, key).await?;
    let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
        return match kv.create(key, record.encode()).await {
            Ok(revision) => Ok(Some(lease(revision))),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(err) => Err(LeaseError::Jetstream(err.to_string())),
        };
    };
    let current = Record::decode(&entry)?;
    let unchanged_for = match *observed {
        Some((revision, since)) if revision == entry.revision => since.elapsed(),
        _ => {
            *observed = Some((entry.revision, Instant::now()));
            Duration::ZERO
        }
    };
    let free = current.expires_at_ms == 0
        || current.expires_at_ms < now_ms()
        || unchanged_for >= Duration::from_millis(current.ttl_ms);
    if !free {
        return Ok(None);
    }
    match kv.update(key, record.encode(), entry.revision).await {
        Ok(revision) => Ok(Some(lease(revision))),
        Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
        Err(err) if err.kind() == UpdateErrorKind::TimedOut => {
            Err(LeaseError::Unavailable(err.to_string()))
        }
        Err(err) => Err(LeaseError::Jetstream(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The takeover window the module's docs state: from TTL - renewal period to TTL + one poll
    /// after the holder's death, 0.67 to 1.1 s at the default TTL.
    #[test]
    fn default_timing_gives_a_takeover_within_about_a_second() {
        let ttl = DEFAULT_LEASE_TTL;
        assert_eq!(ttl, Duration::from_secs(1));
        assert_eq!(renew_every(ttl), Duration::from_nanos(333_333_333));
        assert_eq!(poll_every(ttl), Duration::from_millis(100));
        let earliest = ttl - renew_every(ttl);
        let latest = ttl + poll_every(ttl);
        assert_eq!(earliest.as_millis(), 666);
        assert_eq!(latest.as_millis(), 1_100);
        assert_eq!(
            poll_every(Duration::from_millis(50)),
            Duration::from_millis(10)
        );
    }
}
