//! The log's event decoder (`orchestrator_events::codec::decode`) on arbitrary bytes, as any
//! message in the stream could hold them.
//!
//! Properties: decoding never panics; a decoded envelope re-encodes (as the current version) to
//! bytes that decode to the same envelope; its JSON form (the feed, `tail --json`, the bridge)
//! reads back to the same envelope; folding it into a cell's state never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator::domain::evolve;
use orchestrator_events::{codec, Envelope, CURRENT_VERSION};

fuzz_target!(|data: &[u8]| {
    let Ok(env) = codec::decode(data) else {
        return;
    };
    let current = Envelope {
        schema_version: CURRENT_VERSION,
        ..env.clone()
    };
    assert_eq!(codec::decode(&codec::encode(&env)), Ok(current));
    let json = serde_json::to_vec(&env).expect("an envelope has a JSON form");
    let back: Envelope = serde_json::from_slice(&json).expect("an envelope's JSON reads back");
    assert_eq!(back, env);
    let mut state = orchestrator_fuzz::state().clone();
    let seq = state.last_seq + 1;
    evolve(&mut state, seq, &env);
});
