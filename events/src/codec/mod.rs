//! The versioned postcard codec of the log.
//!
//! Bytes on the wire: the schema version as a postcard varint, then the postcard encoding of that
//! version's envelope. [`decode`] reads every version ever written and upcasts it to the current
//! [`Envelope`]; [`encode`] always writes [`CURRENT_VERSION`].
//!
//! | version | envelope fields, in order |
//! |---|---|
//! | 1 | event_id, command_id, occurred_at, actor, event |
//! | 2 | event_id, command_id, command_digest, occurred_at, actor, event (the shapes of [`v2`]) |
//! | 3 | as 2, with the current [`Event`] |
//!
//! Upcasting 1 → 2 sets `command_digest` to 0 ("unknown"); 2 → 3 gives the fields version 3 added
//! their empty value (no heartbeat, no endpoint, not queued).
//!
//! Every version's bytes are pinned by golden fixtures in `schemas/fixtures/` (one per event type and
//! version, with the JSON each must decode to), checked by this crate's `tests/fixtures.rs`.
//!
//! Decoding never panics. Input longer than [`MAX_EVENT_BYTES`] is refused before it is parsed, and
//! postcard reads each length prefix against the bytes that remain, so no allocation exceeds the input.

use serde::{Deserialize, Serialize};

use crate::envelope::{Actor, Envelope, Timestamp};
use crate::event::Event;

mod v2;
use v2::Event2;

/// The schema version [`encode`] writes.
pub const CURRENT_VERSION: u16 = 3;

/// The oldest schema version [`decode`] still reads.
pub const OLDEST_VERSION: u16 = 1;

/// The largest encoded event accepted, in bytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Why bytes could not be decoded into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty payload")]
    Empty,
    /// More bytes than any event may have.
    #[error("payload of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A version this build does not know (written by a newer release, or garbage).
    #[error(
        "unsupported schema version {0} (this build reads {OLDEST_VERSION} to {CURRENT_VERSION})"
    )]
    UnsupportedVersion(u16),
    /// The bytes do not form an envelope of their version.
    #[error("malformed version {version} envelope: {reason}")]
    Malformed {
        /// The version the bytes claimed.
        version: u16,
        /// What postcard reported.
        reason: String,
    },
    /// A whole envelope was read but bytes were left over.
    #[error("{0} trailing bytes after the envelope")]
    Trailing(usize),
}

#[derive(Serialize)]
struct Ref<'a, E> {
    event_id: &'a str,
    command_id: &'a str,
    command_digest: u64,
    occurred_at: Timestamp,
    actor: &'a Actor,
    event: &'a E,
}

/// The envelope of versions 2 (`E` = [`Event2`]) and 3 (`E` = [`Event`]).
#[derive(Deserialize)]
struct Body<E> {
    event_id: String,
    command_id: String,
    command_digest: u64,
    occurred_at: Timestamp,
    actor: Actor,
    event: E,
}

#[derive(Serialize, Deserialize)]
struct V1 {
    event_id: String,
    command_id: String,
    occurred_at: Timestamp,
    actor: Actor,
    event: Event2,
}

fn encode_as<E: Serialize>(version: u16, env: &Envelope, event: &E) -> Vec<u8> {
    let mut out = postcard::to_stdvec(&version).expect("a u16 always encodes");
    let body = Ref {
        event_id: &env.event_id,
        command_id: &env.command_id,
        command_digest: env.command_digest,
        occurred_at: env.occurred_at,
        actor: &env.actor,
        event,
    };
    // Serialising plain structs, strings and enums into a Vec cannot fail.
    out.extend(postcard::to_stdvec(&body).expect("an envelope always encodes"));
    out
}

/// Encodes an envelope with the current schema version.
pub fn encode(env: &Envelope) -> Vec<u8> {
    encode_as(CURRENT_VERSION, env, &env.event)
}

/// Encodes an envelope as schema version 2; `None` for what version 3 added. Only for fixtures and
/// upcasting tests.
#[doc(hidden)]
pub fn encode_v2(env: &Envelope) -> Option<Vec<u8>> {
    Some(encode_as(2, env, &Event2::from_current(&env.event)?))
}

/// Encodes an envelope as schema version 1, the first one; `None` for what version 3 added. Only
/// for fixtures and upcasting tests.
#[doc(hidden)]
pub fn encode_v1(env: &Envelope) -> Option<Vec<u8>> {
    let mut out = postcard::to_stdvec(&1u16).expect("a u16 always encodes");
    let body = V1 {
        event_id: env.event_id.clone(),
        command_id: env.command_id.clone(),
        occurred_at: env.occurred_at,
        actor: env.actor.clone(),
        event: Event2::from_current(&env.event)?,
    };
    out.extend(postcard::to_stdvec(&body).expect("an envelope always encodes"));
    Some(out)
}

fn body<'de, T: Deserialize<'de>>(version: u16, bytes: &'de [u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError::Malformed {
            version,
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(value)
}

/// Decodes an envelope of any supported version, upcasting it to the current shape.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_EVENT_BYTES,
        });
    }
    let (version, rest) =
        postcard::take_from_bytes::<u16>(bytes).map_err(|e| DecodeError::Malformed {
            version: 0,
            reason: format!("version prefix: {e}"),
        })?;
    match version {
        1 => {
            let v: V1 = body(1, rest)?;
            Ok(Envelope {
                schema_version: 1,
                event_id: v.event_id,
                command_id: v.command_id,
                command_digest: 0,
                occurred_at: v.occurred_at,
                actor: v.actor,
                event: v.event.into(),
            })
        }
        2 => {
            let v: Body<Event2> = body(2, rest)?;
            Ok(Envelope {
                schema_version: 2,
                event_id: v.event_id,
                command_id: v.command_id,
                command_digest: v.command_digest,
                occurred_at: v.occurred_at,
                actor: v.actor,
                event: v.event.into(),
            })
        }
        3 => {
            let v: Body<Event> = body(3, rest)?;
            Ok(Envelope {
                schema_version: 3,
                event_id: v.event_id,
                command_id: v.command_id,
                command_digest: v.command_digest,
                occurred_at: v.occurred_at,
                actor: v.actor,
                event: v.event,
            })
        }
        other => Err(DecodeError::UnsupportedVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Labels, VmId};
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope::new(
            "e1".into(),
            "c1".into(),
            42,
            1_700_000_000_000,
            Actor::operator("ops"),
            Event::VmDrained {
                vm_id: VmId::parse("vm-1").unwrap(),
            },
        )
    }

    #[test]
    fn round_trips() {
        let env = sample();
        assert_eq!(decode(&encode(&env)).unwrap(), env);
    }

    #[test]
    fn upcasts_v1() {
        let env = sample();
        let got = decode(&encode_v1(&env).unwrap()).unwrap();
        assert_eq!(got.schema_version, 1);
        assert_eq!(got.command_digest, 0);
        assert_eq!(got.event, env.event);
    }

    #[test]
    fn upcasts_v2() {
        let env = Envelope::new(
            "e2".into(),
            "c2".into(),
            42,
            1_700_000_000_000,
            Actor::operator("ops"),
            Event::VmRegistered {
                vm_id: VmId::parse("vm-1").unwrap(),
                capacity: 4,
                labels: Labels::new(),
                heartbeat_ms: None,
                endpoint: None,
            },
        );
        let got = decode(&encode_v2(&env).unwrap()).unwrap();
        assert_eq!(got.schema_version, 2);
        assert_eq!(got.event, env.event);
        // What version 3 added has no version 2 shape.
        let lost = Event::VmLost {
            vm_id: VmId::parse("vm-1").unwrap(),
            last_heartbeat: None,
        };
        assert!(encode_v2(&Envelope { event: lost, ..env }).is_none());
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[9]), Err(DecodeError::UnsupportedVersion(9)));
        let mut b = encode(&sample());
        b.push(0);
        assert_eq!(decode(&b), Err(DecodeError::Trailing(1)));
        let big = vec![2u8; MAX_EVENT_BYTES + 1];
        assert!(matches!(decode(&big), Err(DecodeError::TooLarge { .. })));
        // A length prefix claiming 2^32 bytes must fail, not allocate.
        let huge = [3u8, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(decode(&huge), Err(DecodeError::Malformed { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_events(pos in 0usize..64, byte in any::<u8>()) {
            let mut b = encode(&sample());
            let i = pos % b.len();
            b[i] = byte;
            let _ = decode(&b);
        }
    }
}
