//! The writer's decoder of postcard command requests (`writer::protocol::parse_request`, and
//! `parse_batch` for `batch`), as a request on `orch.<cell>.cmd.<name>` without a `Content-Type`.
//!
//! Input: the command's name, a NUL byte, the body. Properties: see `orchestrator_fuzz`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((name, body)) = orchestrator_fuzz::split_named(data) {
        orchestrator_fuzz::command_request(name, body, false);
    }
});
