//! The realistic workload: the ids the benchmark uses, and a generator of the envelopes a busy cell
//! writes (VMs registered first, then sessions that start, get assigned, pause, resume and end,
//! thousands of them interleaved), with the payload sizes the writer produces.

use orchestrator_events::ids::{LabelKey, LabelValue};
use orchestrator_events::{
    Actor, EndReason, Envelope, Event, GameId, Labels, Placement, PlacementPolicy, PlacementReason,
    SessionId, Timestamp, UserId, VmId,
};

/// Slots per benchmark VM.
pub const VM_CAPACITY: u32 = 16;

/// Sessions in progress at once in the generated log.
const LIVE_SESSIONS: usize = 4_000;

/// Distinct users of the generated log: far more than [`LIVE_SESSIONS`], so no user ever has two
/// sessions at once (the quota is 2).
const USERS: u64 = 100_000;

/// Distinct games.
const GAMES: u64 = 200;

/// A small, fast, deterministic random number generator (splitmix64): the benchmark's ids and
/// digests need to look random, not to be secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A version-4 UUID string, as the writer puts in `event_id` and clients in command ids.
    pub fn uuid(&mut self) -> String {
        let bytes = (u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

/// The id of benchmark VM `i`.
pub fn vm_id(i: u32) -> VmId {
    // Letters, digits and '-' only: always a valid VM id.
    VmId::parse(format!("vm-{i:05}")).expect("a valid VM id")
}

fn label(key: &str, value: &str) -> (LabelKey, LabelValue) {
    // Fixed lowercase keys and printable values: always valid.
    (
        LabelKey::parse(key).expect("a valid label key"),
        LabelValue::parse(value).expect("a valid label value"),
    )
}

/// The labels of every benchmark VM.
pub fn vm_labels() -> Labels {
    [label("region", "eu-west"), label("gpu", "a10")]
        .into_iter()
        .collect()
}

/// What every benchmark session requires of its VM.
pub fn requirements() -> Labels {
    [label("region", "eu-west")].into_iter().collect()
}

/// A session id shaped like the ones the writer derives (`s` and 24 hex digits).
fn session_id(n: u64) -> SessionId {
    // 's' and hex digits: always a valid session id.
    SessionId::parse(format!(
        "s{:024x}",
        u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c)
    ))
    .expect("a valid session id")
}

fn user_id(n: u64) -> UserId {
    // Printable ASCII without spaces: always a valid user id.
    UserId::parse(format!("user-{:06}", n % USERS)).expect("a valid user id")
}

fn game_id(n: u64) -> GameId {
    // Printable ASCII without spaces: always a valid game id.
    GameId::parse(format!("game-{:03}", n % GAMES)).expect("a valid game id")
}

/// Where a generated session is in its lifecycle: the event it gets next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Start,
    Assign,
    Pause,
    Resume,
    End,
}

#[derive(Debug, Clone)]
struct Slot {
    next: Next,
    session: u64,
    vm: u32,
}

/// An endless, deterministic sequence of envelopes that a projection and the writer's state accept:
/// first `vms` VM registrations, then session lifecycles interleaved round-robin over
/// [`LIVE_SESSIONS`] slots. Placements respect each VM's capacity.
#[derive(Debug, Clone)]
pub struct EventMix {
    rng: Rng,
    vms: u32,
    registered: u32,
    slots: Vec<Slot>,
    cursor: usize,
    next_session: u64,
    next_vm: u32,
    load: Vec<u32>,
    clock: Timestamp,
}

impl EventMix {
    /// A generator over `vms` VMs (at least 1), seeded with `seed`, its clock starting at `start`
    /// (milliseconds since the Unix epoch) and moving 1 ms per event.
    pub fn new(seed: u64, vms: u32, start: Timestamp) -> Self {
        let vms = vms.max(1);
        let live = LIVE_SESSIONS.min((vms * VM_CAPACITY) as usize);
        Self {
            rng: Rng::new(seed),
            vms,
            registered: 0,
            slots: (0..live)
                .map(|_| Slot {
                    next: Next::Start,
                    session: 0,
                    vm: 0,
                })
                .collect(),
            cursor: 0,
            next_session: 0,
            next_vm: 0,
            load: vec![0; vms as usize],
            clock: start,
        }
    }

    fn envelope(&mut self, actor: Actor, event: Event) -> Envelope {
        self.clock += 1;
        let event_id = self.rng.uuid();
        let command_id = self.rng.uuid();
        let digest = self.rng.next_u64().max(1);
        Envelope::new(event_id, command_id, digest, self.clock, actor, event)
    }

    /// A VM registration, as an operator sends it.
    pub fn register_vm(&mut self, i: u32, capacity: u32) -> Envelope {
        let event = Event::VmRegistered {
            vm_id: vm_id(i),
            capacity,
            labels: vm_labels(),
            heartbeat_ms: None,
            endpoint: None,
        };
        self.envelope(Actor::operator("ops-bench"), event)
    }

    /// Session `n` started (its user and game derived from `n`).
    pub fn start(&mut self, n: u64) -> Envelope {
        let user = user_id(n);
        let event = Event::SessionStarted {
            session_id: session_id(n),
            user_id: user.clone(),
            game_id: game_id(n),
            requirements: requirements(),
        };
        self.envelope(Actor::user(user.as_str()), event)
    }

    /// Session `n` assigned to VM `vm`, which held `load_before` sessions, by the packed policy.
    pub fn assign(&mut self, n: u64, vm: u32, load_before: u32, capacity: u32) -> Envelope {
        let event = Event::SessionAssigned {
            session_id: session_id(n),
            vm_id: vm_id(vm),
            placement: Placement {
                policy: PlacementPolicy::Packed,
                candidates: self.vms,
                eligible: self.vms,
                load_before,
                capacity,
                reason: PlacementReason::FullestWithRoom { tied: 1 },
                queued: None,
            },
        };
        self.envelope(Actor::user(user_id(n).as_str()), event)
    }

    /// The next VM with a free slot, round-robin.
    fn place(&mut self) -> (u32, u32) {
        loop {
            let vm = self.next_vm;
            self.next_vm = (self.next_vm + 1) % self.vms;
            let load = self.load[vm as usize];
            if load < VM_CAPACITY {
                self.load[vm as usize] += 1;
                return (vm, load);
            }
        }
    }

    /// The next envelope of the mix.
    pub fn next_envelope(&mut self) -> Envelope {
        if self.registered < self.vms {
            let i = self.registered;
            self.registered += 1;
            return self.register_vm(i, VM_CAPACITY);
        }
        let i = self.cursor;
        self.cursor = (self.cursor + 1) % self.slots.len();
        let Slot { next, session, vm } = self.slots[i].clone();
        let user = Actor::user(user_id(session).as_str());
        let (env, then) = match next {
            Next::Start => {
                let n = self.next_session;
                self.next_session += 1;
                self.slots[i].session = n;
                (self.start(n), Next::Assign)
            }
            Next::Assign => {
                let (vm, load) = self.place();
                self.slots[i].vm = vm;
                (self.assign(session, vm, load, VM_CAPACITY), Next::Pause)
            }
            Next::Pause => {
                let event = Event::SessionPaused {
                    session_id: session_id(session),
                };
                (self.envelope(user, event), Next::Resume)
            }
            Next::Resume => {
                let event = Event::SessionResumed {
                    session_id: session_id(session),
                };
                (self.envelope(user, event), Next::End)
            }
            Next::End => {
                self.load[vm as usize] -= 1;
                let event = Event::SessionEnded {
                    session_id: session_id(session),
                    reason: EndReason::User,
                    vm_id: Some(vm_id(vm)),
                };
                (self.envelope(user, event), Next::Start)
            }
        };
        self.slots[i].next = then;
        env
    }
}

impl Iterator for EventMix {
    type Item = Envelope;

    fn next(&mut self) -> Option<Envelope> {
        Some(self.next_envelope())
    }
}

pub use orchestrator::clock::now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator::domain::{evolve, State};
    use orchestrator::projections::apply::Overlay;
    use std::collections::BTreeMap;

    #[test]
    fn the_mix_is_accepted_by_the_state_and_the_projection() {
        let mut state = State::default();
        let base = BTreeMap::new();
        let mut overlay = Overlay::new(&base);
        let mut mix = EventMix::new(7, 10, 1_700_000_000_000);
        for (i, env) in mix.by_ref().take(5_000).enumerate() {
            let seq = i as u64 + 1;
            overlay
                .apply(seq, &env)
                .expect("the projection accepts the mix");
            evolve(&mut state, seq, &env);
        }
        assert_eq!(state.vms.len(), 10);
        assert!(state.vms.values().all(|vm| vm.used <= vm.capacity));
        assert!(
            !state.ended.is_empty(),
            "some sessions completed their lifecycle"
        );
        assert!(orchestrator::domain::invariants::check(&state).is_ok());
    }
}
