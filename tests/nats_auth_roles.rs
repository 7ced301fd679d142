//! NATS secured: a real nats-server per test with the orchestrator's users and per-role permissions
//! (and TLS), `serve`'s roles running against it as their own users.
//!
//! Each role's allowed path works end to end (the bridge user's command is accepted and projected, a
//! reader consumes the log and the feed); each forbidden publish or subscribe is refused by the
//! server and nothing is appended (the next accepted command takes the very next sequence).

mod common;
mod nats_auth_support;

use nats_auth_support::*;

/// The bridge's command is accepted, the projector projects it (its `verify` answer, asked by the
/// bridge, covers it with no difference), the feed republishes it and a reader consumes the log and
/// the feed.
async fn each_role_does_its_work(tls: bool) {
    let running = Running::start(tls).await;
    let (server, bridge) = (&running.server, &running.bridge);
    let seq = accepted(&running.commands, "reg-1", &register("vm-1")).await;

    let deadline = Instant::now() + WAIT;
    loop {
        let answer = bridge
            .request(projections_subject(&cell()), "".into())
            .await
            .expect("the projector answers the bridge");
        let report: ProjectionReport = serde_json::from_slice(&answer.payload).expect("a report");
        assert_eq!(report.error, None);
        assert_eq!(report.differences, 0, "{report:?}");
        if report.checkpoint >= seq {
            break;
        }
        assert!(Instant::now() < deadline, "not projected: {report:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (reader_client, _) = connect_as(server, NatsRole::Reader).await;
    let js = jetstream::new(reader_client);
    let reader = Reader::new(js.clone(), cell()).await.expect("the log");
    let (_, mut events) = reader.read_to_end(1).await.expect("a read");
    let first = events.next().await.expect("an event").expect("readable");
    assert_eq!(first.seq, seq);

    let feed = js
        .get_stream(feed_stream_name(&cell()))
        .await
        .expect("the reader sees the feed stream");
    let consumer = feed
        .create_consumer(consumer::pull::Config {
            durable_name: Some("analytics".into()),
            ..Default::default()
        })
        .await
        .expect("the reader attaches a durable consumer");
    let mut messages = consumer.messages().await.expect("a pull");
    let message = tokio::time::timeout(WAIT, messages.next())
        .await
        .expect("the feed republished the event")
        .expect("a message")
        .expect("readable");
    let cloud_event: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
    assert!(
        cloud_event["type"]
            .as_str()
            .unwrap_or("")
            .contains("VmRegistered"),
        "{cloud_event}"
    );
    message.ack().await.expect("the reader acknowledges");
    running.stop().await;
}

#[tokio::test]
async fn each_role_does_its_work_as_its_own_user() {
    each_role_does_its_work(false).await;
}

#[tokio::test]
async fn each_role_does_its_work_over_tls() {
    each_role_does_its_work(true).await;
}

#[tokio::test]
async fn forbidden_publishes_and_subscribes_are_refused_and_nothing_is_appended() {
    let running = Running::start(false).await;
    let (server, commands) = (&running.server, &running.commands);
    let before = accepted(commands, "reg-1", &register("vm-1")).await;
    assert_eq!(last_seq(server).await, before);

    let short = Duration::from_millis(500);
    let command_subject = format!("orch.{}.cmd.vm_register", cell());
    // A reader sends a command the writer would accept.
    let (reader, mut reader_errors) = connect_as(server, NatsRole::Reader).await;
    let as_reader = CommandClient::new(reader.clone(), cell(), short);
    let id = CommandId::parse("forged-1").expect("an id");
    assert!(as_reader
        .send(&id, &Actor::operator("x"), &register("vm-forged"))
        .await
        .is_err());
    refused(&mut reader_errors, "publish", &command_subject).await;

    // A VM agent does too.
    let (agent, mut agent_errors) = connect_as(server, NatsRole::Agent).await;
    let as_agent = CommandClient::new(agent.clone(), cell(), short);
    assert!(as_agent
        .send(&id, &Actor::operator("x"), &register("vm-forged"))
        .await
        .is_err());
    refused(&mut agent_errors, "publish", &command_subject).await;

    // The bridge, and a reader, append to the log directly.
    let event_subject = format!("orch.{}.evt.vm.vm-forged", cell());
    let (bridge_probe, mut bridge_errors) = connect_as(server, NatsRole::Bridge).await;
    append_refused(&bridge_probe, &mut bridge_errors, &event_subject, short).await;
    let reader_js = append_refused(&reader, &mut reader_errors, &event_subject, short).await;

    // A reader takes the lease.
    let lease = reader_js
        .get_key_value(DEFAULT_LEASE_BUCKET)
        .await
        .expect("the reader may look at the lease");
    let key = lease_key(&cell());
    assert!(lease.put(&key, "intruder".into()).await.is_err());
    refused(
        &mut reader_errors,
        "publish",
        &format!("$KV.{DEFAULT_LEASE_BUCKET}.{key}"),
    )
    .await;

    // A reader widens the log's subjects, or deletes it.
    let log = stream_name(&cell());
    for api in ["UPDATE", "DELETE"] {
        let subject = format!("$JS.API.STREAM.{api}.{log}");
        let _ = reader.publish(subject.clone(), "{}".into()).await;
        refused(&mut reader_errors, "publish", &subject).await;
    }
    // A reader forges the feed.
    let feed_subject = format!("orch.{}.feed.VmRegistered.vm.vm-forged", cell());
    let _ = reader.publish(feed_subject.clone(), "{}".into()).await;
    refused(&mut reader_errors, "publish", &feed_subject).await;

    // A reader and the bridge listen to the commands.
    let commands_filter = format!("orch.{}.cmd.>", cell());
    let _listening = reader
        .subscribe(commands_filter.clone())
        .await
        .expect("sent");
    refused(&mut reader_errors, "subscription", &commands_filter).await;
    let _listening = bridge_probe
        .subscribe(commands_filter.clone())
        .await
        .expect("sent");
    refused(&mut bridge_errors, "subscription", &commands_filter).await;

    // Nothing was appended: the log ends where it did, and the next command takes the next
    // sequence. The lease was never the reader's.
    assert_eq!(last_seq(server).await, before);
    let next = accepted(commands, "reg-2", &register("vm-2")).await;
    assert_eq!(next, before + 1);
    let mut history = lease.history(&key).await.expect("the lease's history");
    let deadline = tokio::time::Instant::now() + short;
    while let Ok(Some(entry)) = tokio::time::timeout_at(deadline, history.next()).await {
        let entry = entry.expect("readable");
        assert_ne!(&entry.value[..], b"intruder");
    }
    running.stop().await;
}
