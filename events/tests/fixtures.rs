//! Golden fixtures of the log's bytes, decoded forever.
//!
//! postcard is not self-describing: a reordered field or variant would still decode, into the wrong
//! values. So every event type has, at every schema version, a fixture in `schemas/fixtures/`:
//! `<EventType>[.<variant>].v<N>.bin` (the bytes as written) beside `<same>.json` (the envelope they
//! must decode to). The test decodes every `.bin`, compares it with its `.json`, and encodes it again
//! with that version's encoder, which must give the same bytes.
//!
//! Fixtures are written once and never regenerated: an old version's bytes are the contract. To add
//! the fixtures of a new version or a new event type, add them to [`catalog`] and run
//! `UPDATE_FIXTURES=1 cargo test -p orchestrator-events --test fixtures -- --ignored`, which writes
//! only the files that are missing.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use orchestrator_events::codec::{self, encode_v1, encode_v2, CURRENT_VERSION, OLDEST_VERSION};
use orchestrator_events::{
    Actor, EndReason, Endpoint, Envelope, Event, EventType, Labels, Placement, PlacementPolicy,
    PlacementReason, QueueWait, SessionId, VmId,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/fixtures")
}

/// A fixture file's name, parsed: `SessionEnded.vm_lost.v2.bin`.
#[derive(Debug)]
struct Name {
    stem: String,
    event_type: EventType,
    version: u16,
}

fn parse_name(file: &str) -> Option<Name> {
    let stem = file.strip_suffix(".bin")?;
    let (head, version) = stem.rsplit_once(".v")?;
    let event_type = EventType::parse(head.split('.').next()?)?;
    Some(Name {
        stem: stem.to_owned(),
        event_type,
        version: version.parse().ok()?,
    })
}

fn fixtures() -> Vec<Name> {
    let mut names: Vec<Name> = fs::read_dir(dir())
        .expect("schemas/fixtures exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".bin"))
        .map(|f| parse_name(&f).unwrap_or_else(|| panic!("unexpected fixture name {f}")))
        .collect();
    names.sort_by(|a, b| a.stem.cmp(&b.stem));
    names
}

fn read_json(stem: &str) -> Envelope {
    let path = dir().join(format!("{stem}.json"));
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (every .bin needs its .json)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The schema version that introduced an event type.
fn introduced(t: EventType) -> u16 {
    match t {
        EventType::SessionQueued | EventType::VmLost => 3,
        _ => OLDEST_VERSION,
    }
}

#[test]
fn every_event_type_has_a_fixture_at_every_version() {
    let present: BTreeSet<String> = fixtures().into_iter().map(|n| n.stem).collect();
    let mut missing = Vec::new();
    for t in EventType::ALL {
        for v in introduced(t)..=CURRENT_VERSION {
            let stem = format!("{t}.v{v}");
            if !present.contains(&stem) || !dir().join(format!("{stem}.json")).exists() {
                missing.push(stem);
            }
        }
    }
    assert!(missing.is_empty(), "missing fixtures: {missing:?}");
}

/// Checks a fixture's bytes against its JSON: they decode to it, and encode back to the same bytes.
fn verify(name: &Name, bytes: &[u8], expected: &Envelope) -> Result<(), String> {
    let decoded = codec::decode(bytes).map_err(|e| format!("does not decode: {e}"))?;
    if &decoded != expected {
        return Err(format!(
            "decodes to another envelope:\n  got      {decoded:?}\n  expected {expected:?}"
        ));
    }
    if decoded.event.event_type() != name.event_type || decoded.schema_version != name.version {
        return Err(format!(
            "is a version {} {}, not what its name says",
            decoded.schema_version,
            decoded.event.event_type()
        ));
    }
    let again = match name.version {
        1 if decoded.command_digest != 0 => return Err("v1 has no digest".into()),
        1 => encode_v1(&decoded).ok_or("a version 3 event in a v1 fixture")?,
        2 => encode_v2(&decoded).ok_or("a version 3 event in a v2 fixture")?,
        CURRENT_VERSION => codec::encode(&decoded),
        v => {
            return Err(format!(
                "no encoder for version {v}; compare it differently"
            ))
        }
    };
    if again != bytes {
        return Err("encodes to other bytes".into());
    }
    Ok(())
}

#[test]
fn every_fixture_decodes_to_its_json_and_encodes_to_its_bytes() {
    let all = fixtures();
    assert!(
        all.len() >= EventType::ALL.len() * 2,
        "{} fixtures",
        all.len()
    );
    for name in all {
        let bytes = fs::read(dir().join(format!("{}.bin", name.stem))).unwrap();
        if let Err(e) = verify(&name, &bytes, &read_json(&name.stem)) {
            panic!("fixture {}: {e}", name.stem);
        }
    }
}

#[test]
fn any_changed_byte_is_caught() {
    for name in fixtures() {
        let bytes = fs::read(dir().join(format!("{}.bin", name.stem))).unwrap();
        let expected = read_json(&name.stem);
        for i in 0..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[i] ^= mask;
                assert!(
                    verify(&name, &changed, &expected).is_err(),
                    "{}: byte {i} ^ {mask:#x} goes unnoticed",
                    name.stem
                );
            }
        }
    }
}

#[test]
fn the_current_fixtures_cover_every_variant() {
    let envs: Vec<Envelope> = fixtures()
        .into_iter()
        .filter(|n| n.version == CURRENT_VERSION)
        .map(|n| read_json(&n.stem))
        .collect();
    let reasons: BTreeSet<&str> = envs
        .iter()
        .filter_map(|e| match &e.event {
            Event::SessionEnded { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    let placements: BTreeSet<String> = envs
        .iter()
        .filter_map(|e| match &e.event {
            Event::SessionAssigned { placement, .. } => Some(format!(
                "{}/{}",
                placement.policy.as_str(),
                match placement.reason {
                    PlacementReason::Requested => "requested",
                    PlacementReason::FullestWithRoom { .. } => "fullest",
                    PlacementReason::EmptiestWithRoom { .. } => "emptiest",
                }
            )),
            _ => None,
        })
        .collect();
    let actors: BTreeSet<&str> = envs.iter().map(|e| e.actor.kind.as_str()).collect();
    assert_eq!(reasons.len(), 7, "end reasons covered: {reasons:?}");
    assert_eq!(
        placements,
        BTreeSet::from([
            "explicit/requested".to_owned(),
            "packed/fullest".to_owned(),
            "spread/emptiest".to_owned()
        ])
    );
    assert_eq!(actors.len(), 4, "actor kinds covered: {actors:?}");
    assert!(
        envs.iter().any(|e| matches!(
            &e.event,
            Event::SessionAssigned { placement, .. }
                if matches!(placement.reason, PlacementReason::FullestWithRoom { tied } if tied > 1)
        )),
        "a placement with a tie"
    );
}

// The catalogue the fixtures were written from.

const AT: i64 = 1_732_705_321_437;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
        .collect()
}

fn session() -> SessionId {
    SessionId::parse("s3f9c1a7e52d04b8e9a61c2f0").unwrap()
}

fn vm() -> VmId {
    VmId::parse("eu-west-1-g5-0042").unwrap()
}

fn env(n: u64, actor: Actor, event: Event) -> Envelope {
    Envelope::new(
        format!("01JDQ8ZK6X1Q8M2N4P6R8T0V{n:02}"),
        format!("idem-7d2e9b40-{n:04}-4c1a-9f3e-52b8a1c6d0e7"),
        0x5a17_c0de_0000_0000 + n,
        AT + n as i64 * 61_003,
        actor,
        event,
    )
}

fn assigned(policy: PlacementPolicy, reason: PlacementReason, eligible: u32) -> Event {
    Event::SessionAssigned {
        session_id: session(),
        vm_id: vm(),
        placement: Placement {
            policy,
            candidates: 12,
            eligible,
            load_before: 5,
            capacity: 8,
            reason,
            queued: None,
        },
    }
}

fn ended(reason: EndReason, on_vm: bool) -> Event {
    Event::SessionEnded {
        session_id: session(),
        reason,
        vm_id: on_vm.then(vm),
    }
}

/// Every fixture, by file stem without its version.
fn catalog() -> Vec<(&'static str, Envelope)> {
    let gateway = Actor::service("edge-gateway");
    let player = Actor::user("auth0|65f1e2d3c4b5a69788776655");
    let ops = Actor::operator("jdoe@ops.example.com");
    let system = Actor::system("orchestrator/timers");
    vec![
        (
            "SessionStarted",
            env(
                1,
                gateway.clone(),
                Event::SessionStarted {
                    session_id: session(),
                    user_id: "auth0|65f1e2d3c4b5a69788776655".parse().unwrap(),
                    game_id: "steam:1245620".parse().unwrap(),
                    requirements: labels(&[
                        ("region", "eu-west-1"),
                        ("gpu", "a10g"),
                        ("node.example.com/tier", "premium"),
                    ]),
                },
            ),
        ),
        (
            "SessionAssigned",
            env(
                2,
                gateway.clone(),
                assigned(
                    PlacementPolicy::Packed,
                    PlacementReason::FullestWithRoom { tied: 2 },
                    7,
                ),
            ),
        ),
        (
            "SessionAssigned.spread",
            env(
                3,
                system.clone(),
                assigned(
                    PlacementPolicy::Spread,
                    PlacementReason::EmptiestWithRoom { tied: 1 },
                    7,
                ),
            ),
        ),
        (
            "SessionAssigned.explicit",
            env(
                4,
                ops.clone(),
                assigned(PlacementPolicy::Explicit, PlacementReason::Requested, 1),
            ),
        ),
        (
            "SessionPaused",
            env(
                5,
                player.clone(),
                Event::SessionPaused {
                    session_id: session(),
                },
            ),
        ),
        (
            "SessionResumed",
            env(
                6,
                player.clone(),
                Event::SessionResumed {
                    session_id: session(),
                },
            ),
        ),
        ("SessionEnded", env(7, player, ended(EndReason::User, true))),
        (
            "SessionEnded.operator",
            env(8, ops.clone(), ended(EndReason::Operator, true)),
        ),
        (
            "SessionEnded.pause_timeout",
            env(9, system.clone(), ended(EndReason::PauseTimeout, true)),
        ),
        (
            "SessionEnded.placement_timeout",
            env(
                10,
                system.clone(),
                ended(EndReason::PlacementTimeout, false),
            ),
        ),
        (
            "SessionEnded.vm_retired",
            env(11, ops.clone(), ended(EndReason::VmRetired, true)),
        ),
        (
            "SessionEnded.vm_lost",
            env(12, system.clone(), ended(EndReason::VmLost, true)),
        ),
        (
            "VmRegistered",
            env(
                13,
                ops.clone(),
                Event::VmRegistered {
                    vm_id: vm(),
                    capacity: 8,
                    labels: labels(&[
                        ("region", "eu-west-1"),
                        ("zone", "eu-west-1b"),
                        ("gpu", "a10g"),
                        ("node.kubernetes.io/instance-type", "g5.2xlarge"),
                        ("node.example.com/tier", "premium"),
                    ]),
                    heartbeat_ms: None,
                    endpoint: None,
                },
            ),
        ),
        (
            "VmRegistered.heartbeat",
            env(
                16,
                ops.clone(),
                Event::VmRegistered {
                    vm_id: vm(),
                    capacity: 4,
                    labels: labels(&[("region", "eu-west-1")]),
                    heartbeat_ms: Some(5_000),
                    endpoint: Some(Endpoint {
                        address: "10.42.7.19".parse().unwrap(),
                        ports: [
                            ("control".parse().unwrap(), 47_999),
                            ("stream".parse().unwrap(), 47_998),
                        ]
                        .into_iter()
                        .collect(),
                    }),
                },
            ),
        ),
        (
            "SessionQueued",
            env(
                17,
                gateway.clone(),
                Event::SessionQueued {
                    session_id: session(),
                    policy: PlacementPolicy::Spread,
                    deadline: AT + 17 * 61_003 + 120_000,
                },
            ),
        ),
        (
            "SessionAssigned.queued",
            env(18, system.clone(), {
                let mut e = assigned(
                    PlacementPolicy::Spread,
                    PlacementReason::EmptiestWithRoom { tied: 1 },
                    1,
                );
                if let Event::SessionAssigned { placement, .. } = &mut e {
                    placement.queued = Some(QueueWait {
                        since: AT + 17 * 61_003,
                        waited_ms: 61_003,
                    });
                }
                e
            }),
        ),
        (
            "SessionEnded.max_length",
            env(19, system.clone(), ended(EndReason::MaxLength, true)),
        ),
        (
            "VmLost",
            env(
                20,
                system,
                Event::VmLost {
                    vm_id: vm(),
                    last_heartbeat: Some(AT + 19 * 61_003),
                },
            ),
        ),
        (
            "VmDrained",
            env(14, ops.clone(), Event::VmDrained { vm_id: vm() }),
        ),
        ("VmRetired", env(15, ops, Event::VmRetired { vm_id: vm() })),
    ]
}

/// Writes the fixtures of [`catalog`] that are missing, at every version; never overwrites one.
#[test]
#[ignore = "writes fixtures; run with UPDATE_FIXTURES=1 and --ignored"]
fn write_missing_fixtures() {
    if std::env::var_os("UPDATE_FIXTURES").is_none() {
        eprintln!("set UPDATE_FIXTURES=1 to write missing fixtures");
        return;
    }
    fs::create_dir_all(dir()).unwrap();
    let kinds: BTreeSet<&str> = catalog()
        .iter()
        .map(|(_, e)| e.actor.kind.as_str())
        .collect();
    assert_eq!(kinds.len(), 4, "the catalogue uses every actor kind");
    for (stem, current) in catalog() {
        for version in OLDEST_VERSION..=CURRENT_VERSION {
            let old = match version {
                1 => encode_v1(&current),
                2 => encode_v2(&current),
                _ => None,
            };
            let (bytes, env) = match (version, old) {
                (CURRENT_VERSION, _) => (codec::encode(&current), current.clone()),
                (_, Some(bytes)) => (bytes.clone(), codec::decode(&bytes).unwrap()),
                // Added later: no fixture at this version.
                (_, None) => continue,
            };
            let bin = dir().join(format!("{stem}.v{version}.bin"));
            let json = dir().join(format!("{stem}.v{version}.json"));
            if bin.exists() || json.exists() {
                eprintln!("kept    {}", bin.display());
                continue;
            }
            fs::write(&bin, &bytes).unwrap();
            let text = serde_json::to_string_pretty(&env).unwrap() + "\n";
            fs::write(&json, text).unwrap();
            eprintln!("written {}", bin.display());
        }
    }
}
