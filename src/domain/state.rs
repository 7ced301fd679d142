//! The decision state of one cell, as folded from its log by [`super::evolve()`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use orchestrator_events::{
    Endpoint, GameId, Labels, PlacementPolicy, SessionId, Timestamp, UserId, VmId,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::idempotency::Idempotency;
use super::placement::PlacementIndex;

/// Tunables of the domain. Every writer and replay of a cell must use the same values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// Concurrent (not ended) sessions a user may have. Default 2.
    pub max_sessions_per_user: u32,
    /// How long a command id is remembered, in milliseconds of event time. Default 24 h.
    pub idempotency_window_ms: i64,
    /// How many command ids are remembered at the most (the newest). Default 2,000,000.
    pub max_remembered_commands: u64,
    /// The largest VM capacity accepted. Default 1024.
    pub max_vm_capacity: u32,
}

impl Default for DomainConfig {
    fn default() -> Self {
        Self {
            max_sessions_per_user: 2,
            idempotency_window_ms: 24 * 3600 * 1000,
            max_remembered_commands: 2_000_000,
            max_vm_capacity: 1024,
        }
    }
}

/// A session's status. Names kept from the legacy system.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Created, waiting for a VM.
    Starting,
    /// Running on a VM.
    Active,
    /// Paused; keeps its VM slot.
    Paused,
    /// Over; final.
    Ended,
}

impl SessionStatus {
    /// Every status.
    pub const ALL: [SessionStatus; 4] = [
        SessionStatus::Starting,
        SessionStatus::Active,
        SessionStatus::Paused,
        SessionStatus::Ended,
    ];

    /// The status as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Starting => "starting",
            SessionStatus::Active => "active",
            SessionStatus::Paused => "paused",
            SessionStatus::Ended => "ended",
        }
    }

    /// Whether the session occupies a VM slot.
    pub fn holds_slot(self) -> bool {
        matches!(self, SessionStatus::Active | SessionStatus::Paused)
    }

    /// Parses `starting`, `active`, `paused` or `ended`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A VM's status.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum VmStatus {
    /// Takes placements.
    Available,
    /// Takes no new placements; its sessions keep running.
    Draining,
    /// Left the pool.
    Retired,
    /// Missed its heartbeat deadline and left the pool; it may register again.
    Lost,
}

impl VmStatus {
    /// The status as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Available => "available",
            VmStatus::Draining => "draining",
            VmStatus::Retired => "retired",
            VmStatus::Lost => "lost",
        }
    }
}

/// A session as the writer needs it to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Whose.
    pub user_id: UserId,
    /// Which game.
    pub game_id: GameId,
    /// Labels its VM must carry; emptied once it is placed (placement is their only reader).
    pub requirements: Labels,
    /// Where it is in its lifecycle.
    pub status: SessionStatus,
    /// Its VM, once assigned (kept after it ends, for the record).
    pub vm_id: Option<VmId>,
    /// When it started, and the sequence of its start (arms the maximum length).
    pub started: Mark,
    /// When it entered its current status (arms the pause and placement timeouts).
    pub since: Mark,
    /// Set while it waits in the placement queue.
    pub queued: Option<Queued>,
}

/// A point in the log: a stream sequence and its event's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mark {
    /// The stream sequence.
    pub seq: u64,
    /// The event's time.
    pub at: Timestamp,
}

/// A session's place in the placement queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Its `SessionQueued` event.
    pub since: Mark,
    /// When it times out.
    pub deadline: Timestamp,
    /// The policy its placement uses.
    pub policy: PlacementPolicy,
}

/// A VM as the writer needs it to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// Sessions it can hold.
    pub capacity: u32,
    /// Its labels.
    pub labels: Labels,
    /// Whether it takes placements.
    pub status: VmStatus,
    /// Sessions it holds (active + paused).
    pub used: u32,
    /// Its heartbeat interval in milliseconds, if it sends heartbeats.
    pub heartbeat_ms: Option<u32>,
    /// Where clients connect.
    pub endpoint: Option<Endpoint>,
    /// Its (latest) registration: the sequence arms the loss of this incarnation, and its heartbeat
    /// deadline counts from no earlier than the time.
    pub registered: Mark,
}

impl Vm {
    /// Free slots.
    pub fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.used)
    }

    /// Whether it carries every required label with the required value.
    pub fn matches(&self, requirements: &Labels) -> bool {
        requirements
            .iter()
            .all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// The decision state of a cell. Serialisable, for the writer's snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The tunables.
    pub config: DomainConfig,
    /// Sessions not ended. An ended one leaves this map for [`State::ended`].
    pub sessions: HashMap<SessionId, Session>,
    /// Ended sessions, by [`ended_key`] of their id: 16 bytes each, so that an ended session's id
    /// stays taken and commands on it are refused as before, without keeping the session.
    pub ended: HashSet<u128>,
    /// Every VM ever registered, sorted by id so placement is deterministic.
    pub vms: BTreeMap<VmId, Vm>,
    /// Sessions not ended, per user.
    pub live_by_user: HashMap<UserId, u32>,
    /// Command ids seen within the window.
    pub idempotency: Idempotency,
    /// Deadline indexes of the timers, derived from `sessions` (see [`super::timers`]).
    pub timers: TimerIndex,
    /// The VMs each waiting requirement set can use, by load (see [`PlacementIndex`]).
    pub placement: PlacementIndex,
    /// The stream sequence of the last event folded in (0: none).
    pub last_seq: u64,
    /// The time of the last event folded in.
    pub last_at: Timestamp,
}

impl Default for State {
    fn default() -> Self {
        Self::new(DomainConfig::default())
    }
}

impl State {
    /// An empty cell.
    pub fn new(config: DomainConfig) -> Self {
        let max_ids = usize::try_from(config.max_remembered_commands).unwrap_or(usize::MAX);
        let idempotency = Idempotency::new(config.idempotency_window_ms, max_ids);
        Self {
            config,
            sessions: HashMap::new(),
            ended: HashSet::new(),
            vms: BTreeMap::new(),
            live_by_user: HashMap::new(),
            idempotency,
            timers: TimerIndex::default(),
            placement: PlacementIndex::default(),
            last_seq: 0,
            last_at: 0,
        }
    }

    /// A digest of the whole state that does not depend on hash-map order: two states with the same
    /// content have the same fingerprint. `verify` compares the writer's with a replay's.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        // Plain data: postcard encoding cannot fail.
        let enc = |v: &dyn erased::Encode| v.encode();
        h.update(enc(&self.config));
        h.update(self.last_seq.to_be_bytes());
        h.update(self.last_at.to_be_bytes());
        let mut sessions: Vec<_> = self.sessions.iter().collect();
        sessions.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (id, s) in sessions {
            h.update(enc(id));
            h.update(enc(s));
        }
        let mut ended: Vec<_> = self.ended.iter().collect();
        ended.sort_unstable();
        for k in ended {
            h.update(k.to_be_bytes());
        }
        for (id, vm) in &self.vms {
            h.update(enc(id));
            h.update(enc(vm));
        }
        let mut users: Vec<_> = self.live_by_user.iter().collect();
        users.sort_unstable();
        for (u, n) in users {
            h.update(enc(u));
            h.update(n.to_be_bytes());
        }
        self.idempotency.hash_into(&mut h);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A session's status: `None` when no session of that id was ever started.
    pub fn session_status(&self, id: &SessionId) -> Option<SessionStatus> {
        match self.sessions.get(id) {
            Some(s) => Some(s.status),
            None if self.ended.contains(&ended_key(id)) => Some(SessionStatus::Ended),
            None => None,
        }
    }

    /// Whether a session of that id was ever started (ended ones included).
    pub fn session_id_taken(&self, id: &SessionId) -> bool {
        self.sessions.contains_key(id) || self.ended.contains(&ended_key(id))
    }

    /// Whether a VM of that id is in the pool's records and may not register again: any VM but a
    /// lost one (which comes back by registering).
    pub fn vm_id_taken(&self, id: &VmId) -> bool {
        self.vms
            .get(id)
            .is_some_and(|vm| vm.status != VmStatus::Lost)
    }

    /// Sessions a user has that are not ended.
    pub fn live_sessions_of(&self, user: &UserId) -> u32 {
        self.live_by_user.get(user).copied().unwrap_or(0)
    }
}

/// The sessions each timer watches, ordered by the time that arms it, so finding what is due reads
/// only what is due. Maintained by [`super::evolve()`]; every entry is a live session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerIndex {
    /// `paused` sessions by the time they paused.
    pub paused: BTreeSet<(Timestamp, SessionId)>,
    /// `starting` sessions not queued, by the time they started.
    pub starting: BTreeSet<(Timestamp, SessionId)>,
    /// Queued sessions by deadline.
    pub queue_deadlines: BTreeSet<(Timestamp, SessionId)>,
    /// The placement queue: queued sessions by the sequence of their `SessionQueued`, oldest first.
    pub queue: BTreeMap<u64, SessionId>,
    /// Live sessions by the time they started.
    pub live: BTreeSet<(Timestamp, SessionId)>,
}

/// The key an ended session is remembered by: the first 128 bits of the SHA-256 of its id. Two ids
/// collide with a probability of about n²/2¹²⁹ (for a billion ended sessions, about 10⁻²¹).
pub fn ended_key(id: &SessionId) -> u128 {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(id.as_str().as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_be_bytes(first)
}

mod erased {
    /// Object-safe postcard encoding, so the fingerprint can feed values of any type.
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            // Domain values are plain data: postcard encoding cannot fail.
            postcard::to_stdvec(self).expect("domain values always encode")
        }
    }
}
