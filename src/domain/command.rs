//! Commands: what a caller asks the orchestrator to do. Imperative names; each accepted command yields
//! exactly one event.

use orchestrator_events::event::MAX_PORTS;
use orchestrator_events::ids::{Labels, MAX_LABELS};
use orchestrator_events::{
    Actor, CommandId, EndReason, Endpoint, GameId, PlacementPolicy, SessionId, Timestamp, UserId,
    VmId,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::rejection::Rejection;

/// Start a session for a user. It is `starting` until a VM is assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    /// The session's id. When absent it is derived from the actor and the command id, so a retry
    /// names the same session and two senders' keys never name the same one.
    #[serde(default)]
    pub session_id: Option<SessionId>,
    /// Whose session.
    pub user_id: UserId,
    /// Which game.
    pub game_id: GameId,
    /// Labels the VM must carry, e.g. `{"region": "eu-west", "gpu": "a10"}`.
    #[serde(default)]
    pub requirements: Labels,
}

/// Place a `starting` session on a VM: the named one, or one chosen by a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignVm {
    /// The session.
    pub session_id: SessionId,
    /// The VM to use; absent: the policy picks one.
    #[serde(default)]
    pub vm_id: Option<VmId>,
    /// `packed` (the default) or `spread`; only without `vm_id`.
    #[serde(default)]
    pub policy: Option<PlacementPolicy>,
    /// When no VM has room, wait in the placement queue up to this many milliseconds (1 to
    /// [`MAX_WAIT_MS`]) instead of being refused with `no_capacity`; only without `vm_id`. The
    /// session stays `starting` and is placed, first come first served, when room frees.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// The longest a session may wait in the placement queue: one hour.
pub const MAX_WAIT_MS: u64 = 3600 * 1000;

/// The shortest and longest heartbeat interval a VM may promise, in milliseconds.
pub const HEARTBEAT_MS_RANGE: std::ops::RangeInclusive<u32> = 100..=600_000;

/// A command naming one session and nothing else (pause, resume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRef {
    /// The session.
    pub session_id: SessionId,
}

/// End a session, from any state but `ended`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndSession {
    /// The session.
    pub session_id: SessionId,
    /// Why it ends.
    pub reason: EndReason,
}

/// Add a VM to the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterVm {
    /// The VM.
    pub vm_id: VmId,
    /// How many sessions (active + paused) it holds, 1 to [`super::DomainConfig::max_vm_capacity`].
    pub capacity: u32,
    /// Its labels.
    #[serde(default)]
    pub labels: Labels,
    /// The interval at which it sends heartbeats, in milliseconds (100 to 600,000); absent: it sends
    /// none and is never declared lost.
    #[serde(default)]
    pub heartbeat_ms: Option<u32>,
    /// Where a session's client connects: given to the session's owner once it is placed.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
}

/// The orchestrator ends a session on its own (a timer, or its VM lost). Only the `system` actor
/// sends it. `armed_seq` is the sequence of the event that armed the timer; the command is refused
/// (`invalid_transition`) once the session has moved on, so a timer racing a user's command yields
/// one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpireSession {
    /// The session.
    pub session_id: SessionId,
    /// `pause_timeout`, `placement_timeout`, `max_length` or `vm_lost`.
    pub reason: EndReason,
    /// The arming event: the pause (`pause_timeout`), the start or the queueing
    /// (`placement_timeout`), the start (`max_length`), the VM's registration (`vm_lost`).
    pub armed_seq: u64,
}

/// The orchestrator declares a VM lost after its sessions were ended. Only the `system` actor sends
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareVmLost {
    /// The VM.
    pub vm_id: VmId,
    /// The sequence of the registration it is the loss of.
    pub registered_seq: u64,
    /// When the writer last heard from it.
    pub last_heartbeat: Option<Timestamp>,
}

/// A command naming one VM and nothing else (drain, retire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmRef {
    /// The VM.
    pub vm_id: VmId,
}

/// Every command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// See [`StartSession`].
    StartSession(StartSession),
    /// See [`AssignVm`].
    AssignVm(AssignVm),
    /// Pause an `active` session; it keeps its VM slot.
    PauseSession(SessionRef),
    /// Resume a `paused` session.
    ResumeSession(SessionRef),
    /// See [`EndSession`].
    EndSession(EndSession),
    /// See [`RegisterVm`].
    RegisterVm(RegisterVm),
    /// Stop placing sessions on a VM; its sessions keep running.
    DrainVm(VmRef),
    /// Remove an empty VM for good.
    RetireVm(VmRef),
    /// See [`ExpireSession`] (system only).
    ExpireSession(ExpireSession),
    /// See [`DeclareVmLost`] (system only).
    DeclareVmLost(DeclareVmLost),
}

/// The names of the commands, as in `orch.<cell>.cmd.<name>` and in rejections.
pub const COMMAND_NAMES: [&str; 8] = [
    "start",
    "assign",
    "pause",
    "resume",
    "end",
    "vm_register",
    "vm_drain",
    "vm_retire",
];

impl Command {
    /// The command's name, e.g. `start` or `vm_drain`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::StartSession(_) => "start",
            Command::AssignVm(_) => "assign",
            Command::PauseSession(_) => "pause",
            Command::ResumeSession(_) => "resume",
            Command::EndSession(_) => "end",
            Command::RegisterVm(_) => "vm_register",
            Command::DrainVm(_) => "vm_drain",
            Command::RetireVm(_) => "vm_retire",
            Command::ExpireSession(_) => "expire",
            Command::DeclareVmLost(_) => "vm_lost",
        }
    }

    /// Whether only the orchestrator itself (the `system` actor) may send it.
    pub fn system_only(&self) -> bool {
        matches!(self, Command::ExpireSession(_) | Command::DeclareVmLost(_))
    }

    /// The session the command is about, once normalised.
    pub fn session_id(&self) -> Option<&SessionId> {
        match self {
            Command::StartSession(c) => c.session_id.as_ref(),
            Command::AssignVm(AssignVm { session_id, .. })
            | Command::PauseSession(SessionRef { session_id })
            | Command::ResumeSession(SessionRef { session_id })
            | Command::EndSession(EndSession { session_id, .. })
            | Command::ExpireSession(ExpireSession { session_id, .. }) => Some(session_id),
            _ => None,
        }
    }

    /// A digest of the command's body, stable across releases: the first 8 bytes of the SHA-256 of its
    /// postcard encoding. A command id reused with a body of another digest is refused.
    pub fn digest(&self) -> u64 {
        // Serialising plain structs, strings and maps into a Vec cannot fail.
        let bytes = postcard::to_stdvec(self).expect("a command always encodes");
        let hash = Sha256::digest(&bytes);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        // Never 0, which stands for "unknown" in old envelopes.
        u64::from_be_bytes(first).max(1)
    }

    /// Fills what the caller may leave out and that must be the same on every retry: a start without a
    /// session id gets one derived from the actor and the command id.
    pub fn normalise(&mut self, actor: &Actor, command_id: &CommandId) {
        if let Command::StartSession(c) = self {
            if c.session_id.is_none() {
                c.session_id = Some(derive_session_id(actor, command_id));
            }
        }
    }

    /// Checks the arguments that no state can make valid.
    pub fn validate(&self, config: &super::DomainConfig) -> Result<(), Rejection> {
        let labels_ok = |field: &'static str, labels: &Labels| {
            if labels.len() > MAX_LABELS {
                Err(Rejection::invalid_argument(
                    field,
                    format!("at most {MAX_LABELS} labels"),
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Command::StartSession(c) => labels_ok("requirements", &c.requirements),
            Command::AssignVm(c) if c.vm_id.is_some() && c.policy.is_some() => Err(
                Rejection::invalid_argument("policy", "give either vm_id or policy, not both"),
            ),
            Command::AssignVm(c) if c.vm_id.is_some() && c.wait_ms.is_some() => Err(
                Rejection::invalid_argument("wait_ms", "only a placement by policy waits"),
            ),
            Command::AssignVm(AssignVm {
                wait_ms: Some(w), ..
            }) if *w == 0 || *w > MAX_WAIT_MS => Err(Rejection::invalid_argument(
                "wait_ms",
                format!("must be 1 to {MAX_WAIT_MS}"),
            )),
            Command::AssignVm(AssignVm {
                policy: Some(PlacementPolicy::Explicit),
                ..
            }) => Err(Rejection::invalid_argument(
                "policy",
                "`explicit` is implied by vm_id; choose packed or spread",
            )),
            Command::RegisterVm(c) => {
                if c.capacity == 0 || c.capacity > config.max_vm_capacity {
                    return Err(Rejection::invalid_argument(
                        "capacity",
                        format!("must be 1 to {}", config.max_vm_capacity),
                    ));
                }
                if let Some(h) = c.heartbeat_ms {
                    if !HEARTBEAT_MS_RANGE.contains(&h) {
                        return Err(Rejection::invalid_argument(
                            "heartbeat_ms",
                            format!(
                                "must be {} to {}",
                                HEARTBEAT_MS_RANGE.start(),
                                HEARTBEAT_MS_RANGE.end()
                            ),
                        ));
                    }
                }
                if let Some(e) = &c.endpoint {
                    if e.ports.len() > MAX_PORTS {
                        return Err(Rejection::invalid_argument(
                            "endpoint.ports",
                            format!("at most {MAX_PORTS} ports"),
                        ));
                    }
                    if e.ports.values().any(|p| *p == 0) {
                        return Err(Rejection::invalid_argument(
                            "endpoint.ports",
                            "ports are 1 to 65535",
                        ));
                    }
                }
                labels_ok("labels", &c.labels)
            }
            Command::ExpireSession(c) => match c.reason {
                EndReason::PauseTimeout
                | EndReason::PlacementTimeout
                | EndReason::MaxLength
                | EndReason::VmLost => Ok(()),
                other => Err(Rejection::invalid_argument(
                    "reason",
                    format!("{} is not a timer's reason", other.as_str()),
                )),
            },
            _ => Ok(()),
        }
    }
}

/// The session id a start without one gets: `s` and 24 hex digits of the SHA-256 of the actor and
/// the command id (scoped like the idempotency table, so one sender's key cannot take another's
/// session id).
pub fn derive_session_id(actor: &Actor, command_id: &CommandId) -> SessionId {
    let hash = super::idempotency::scoped_hash(actor, command_id.as_str());
    let hex: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
    // 's' followed by hex digits is always a valid session id.
    SessionId::parse(format!("s{hex}")).expect("hex is a valid session id")
}

/// The metadata the writer attaches to a command before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMeta {
    /// The idempotency key.
    pub command_id: CommandId,
    /// Who issued it.
    pub actor: Actor,
    /// The writer's clock when it decides, in milliseconds since the Unix epoch.
    pub at: Timestamp,
}

/// The longest actor id accepted, in bytes. With every other field bounded by its id type (see
/// `orchestrator_events::ids`), this keeps the event of any accepted command under
/// [`orchestrator_events::MAX_EVENT_BYTES`] (the largest is about 7 KiB; a test checks each kind).
pub const MAX_ACTOR_ID_BYTES: usize = 128;

impl CommandMeta {
    /// Checks what no state can make valid: the actor's id is 1 to [`MAX_ACTOR_ID_BYTES`]
    /// printable ASCII characters without spaces, like a user id.
    pub fn validate(&self) -> Result<(), Rejection> {
        let id = &self.actor.id;
        if id.is_empty() || id.len() > MAX_ACTOR_ID_BYTES {
            return Err(Rejection::invalid_argument(
                "actor.id",
                format!("must be 1 to {MAX_ACTOR_ID_BYTES} bytes, not {}", id.len()),
            ));
        }
        if let Some(ch) = id.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(Rejection::invalid_argument(
                "actor.id",
                format!("holds {ch:?}: printable ASCII without spaces only"),
            ));
        }
        Ok(())
    }
}

/// A command as it travels on `orch.<cell>.cmd.<name>`: postcard, or JSON with
/// `Content-Type: application/json`. `command` is the body of the command the subject names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest<C> {
    /// The idempotency key: a retry with the same id returns the first result.
    pub command_id: CommandId,
    /// Who issues it. The NATS account is the trust boundary: publishers are trusted services.
    pub actor: Actor,
    /// The command's body.
    pub command: C,
}
