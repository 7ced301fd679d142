//! The store's layout: one sled tree, so a batch of events and the checkpoint commit atomically.
//!
//! | key | value |
//! |---|---|
//! | `s:<session_id>` | [`super::SessionView`] |
//! | `u:<user_id>\0<session_id>` | empty: sessions by user |
//! | `v:<vm_id>\0<session_id>` | empty: sessions holding a slot on a VM |
//! | `t:<status>\0<session_id>` | empty: sessions by status, for the statuses of sessions in progress only ([`status_indexed`]); ended sessions are listed from `s:` |
//! | `m:<vm_id>` | [`super::VmView`] |
//! | `q:<seq>` | session id: the placement queue, in the order sessions were queued |
//! | `c:<status>` | u64: sessions per status |
//! | `r:<end reason>` | u64: sessions ended per reason |
//! | `_checkpoint` | u64: the last stream sequence applied |
//! | `_version` | u32: the projection's version ([`super::PROJECTION_VERSION`]) |
//!
//! Ended sessions, the bulk of a long log, keep two keys each (`s:` and `u:`): a session in progress
//! has its status indexed so that the few of them are found among the many ended ones, and an ended
//! session is never written again.

use orchestrator_events::{EndReason, SessionId, UserId, VmId};

use crate::domain::SessionStatus;

/// The checkpoint key.
pub const CHECKPOINT_KEY: &[u8] = b"_checkpoint";
/// The version key.
pub const VERSION_KEY: &[u8] = b"_version";
/// The prefix of every session view.
pub const SESSIONS_PREFIX: &[u8] = b"s:";

/// Whether sessions in `status` have `t:` index keys: those in progress. Ended sessions are listed
/// by scanning the session views, most of which they are.
pub fn status_indexed(status: SessionStatus) -> bool {
    status != SessionStatus::Ended
}

/// `r:<end reason>`: how many sessions ended for it.
pub fn reason_key(reason: EndReason) -> Vec<u8> {
    format!("r:{}", reason.as_str()).into_bytes()
}

/// Decodes a big-endian u64 value (0 if malformed).
pub fn decode_u64(b: &[u8]) -> u64 {
    b.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// `s:<session_id>`
pub fn session_key(id: &SessionId) -> Vec<u8> {
    [SESSIONS_PREFIX, id.as_str().as_bytes()].concat()
}

/// `u:<user_id>\0`: the prefix of a user's sessions.
pub fn user_prefix(user: &UserId) -> Vec<u8> {
    [b"u:", user.as_str().as_bytes(), b"\0"].concat()
}

/// `u:<user_id>\0<session_id>`
pub fn user_key(user: &UserId, id: &SessionId) -> Vec<u8> {
    [user_prefix(user).as_slice(), id.as_str().as_bytes()].concat()
}

/// `v:<vm_id>\0`: the prefix of the sessions holding a slot on a VM.
pub fn vm_sessions_prefix(vm: &VmId) -> Vec<u8> {
    [b"v:", vm.as_str().as_bytes(), b"\0"].concat()
}

/// `v:<vm_id>\0<session_id>`
pub fn vm_session_key(vm: &VmId, id: &SessionId) -> Vec<u8> {
    [vm_sessions_prefix(vm).as_slice(), id.as_str().as_bytes()].concat()
}

/// `t:<status>\0`: the prefix of the sessions in a status (see [`status_indexed`]).
pub fn status_prefix(status: SessionStatus) -> Vec<u8> {
    [b"t:", status.as_str().as_bytes(), b"\0"].concat()
}

/// `t:<status>\0<session_id>`
pub fn status_key(status: SessionStatus, id: &SessionId) -> Vec<u8> {
    [status_prefix(status).as_slice(), id.as_str().as_bytes()].concat()
}

/// The key of a session's place in the placement queue: `q:` and its `SessionQueued`'s sequence,
/// big-endian so keys sort in queue order.
pub fn queue_key(seq: u64) -> Vec<u8> {
    let mut k = b"q:".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `m:<vm_id>`
pub fn vm_key(id: &VmId) -> Vec<u8> {
    [b"m:", id.as_str().as_bytes()].concat()
}

/// `c:<status>`
pub fn count_key(status: SessionStatus) -> Vec<u8> {
    [b"c:", status.as_str().as_bytes()].concat()
}
