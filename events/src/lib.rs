//! The event contract of the session orchestrator.
//!
//! Analytics consumers, replay tools and the orchestrator itself depend on this crate, and it depends on
//! nothing of the service. What it owns:
//!
//! - [`ids`]: validated identifiers (sessions, VMs, users, games, commands, cells, labels).
//! - [`event`]: every event type and the values they carry (placement explanation, end reasons).
//! - [`envelope`]: the envelope around each event: schema version, event id, command id, time, actor.
//! - [`codec`]: the versioned postcard codec, which upcasts older versions on read and never panics or
//!   allocates without bound on untrusted bytes.
//! - [`subject`]: the NATS subject of each event and the headers that travel with it.
//!
//! ```
//! use orchestrator_events::{codec, envelope::{Actor, Envelope}, event::Event, ids::VmId};
//!
//! let env = Envelope::new(
//!     "01J0-example".into(),
//!     "cmd-1".into(),
//!     7,
//!     1_700_000_000_000,
//!     Actor::operator("ops-1"),
//!     Event::VmDrained { vm_id: VmId::parse("vm-1").unwrap() },
//! );
//! let bytes = codec::encode(&env);
//! assert_eq!(codec::decode(&bytes).unwrap(), env);
//! ```

pub mod codec;
pub mod envelope;
pub mod event;
pub mod ids;
pub mod subject;

pub use codec::{decode, encode, DecodeError, CURRENT_VERSION, MAX_EVENT_BYTES};
pub use envelope::{rfc3339, Actor, ActorKind, Envelope, Timestamp};
pub use event::{
    EndReason, Endpoint, Event, EventType, Placement, PlacementPolicy, PlacementReason, QueueWait,
};
pub use ids::{CellId, CommandId, GameId, Host, IdError, Labels, SessionId, UserId, VmId};
