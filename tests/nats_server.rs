//! The local `nats-server` supervisor against the real binary under test: start, JetStream appends,
//! graceful stop, crash, restart on the same port and store, and the durability modes per version.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use common::TestServer;
use orchestrator::nats_server::{
    Durability, NatsServer, NatsServerConfig, NatsServerError, ServerVersion, CONFIG_FILE,
    SYNC_ALWAYS_MIN_VERSION,
};

const STREAM: &str = "TEST";

/// Creates the small file-backed stream the tests append to.
async fn create_stream(js: &jetstream::Context) -> stream::Stream {
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["test.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("the stream is created")
}

/// Publishes with `msg_id` (so a retry is deduplicated) and returns the acknowledged sequence.
async fn publish(js: &jetstream::Context, msg_id: &str, payload: &'static str) -> u64 {
    let message = PublishMessage::build()
        .payload(Bytes::from_static(payload.as_bytes()))
        .message_id(msg_id);
    js.send_publish("test.a", message)
        .await
        .expect("the publish is sent")
        .await
        .expect("the publish is acknowledged")
        .sequence
}

/// Publishes until acknowledged, for up to 30 s: the client reconnects by itself meanwhile. The
/// message id makes every attempt after a lost ack a duplicate, not a second message.
async fn publish_retrying(js: &jetstream::Context, msg_id: &str, payload: &'static str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let message = PublishMessage::build()
            .payload(Bytes::from_static(payload.as_bytes()))
            .message_id(msg_id);
        let result = match js.send_publish("test.a", message).await {
            Ok(ack) => ack.await.map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match result {
            Ok(ack) => return ack.sequence,
            Err(err) if Instant::now() < deadline => {
                eprintln!("publish not acknowledged yet ({err}), retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no ack within 30 s after restart: {err}"),
        }
    }
}

/// The payloads stored in the stream, by sequence.
async fn payloads(js: &jetstream::Context) -> Vec<Bytes> {
    let mut stream = js.get_stream(STREAM).await.expect("the stream exists");
    let count = stream.info().await.expect("stream info").state.messages;
    let mut payloads = Vec::new();
    for sequence in 1..=count {
        let message = stream
            .get_raw_message(sequence)
            .await
            .expect("the message is stored");
        payloads.push(message.payload);
    }
    payloads
}

#[tokio::test]
async fn starts_and_acknowledges_a_jetstream_append() {
    let server = TestServer::start_default().await;
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert_eq!(server.durability(), Durability::Default);
    assert!(server.pid().is_some());
    let js = server.jetstream().await;
    create_stream(&js).await;

    assert_eq!(publish(&js, "m1", "first").await, 1);
    assert_eq!(publish(&js, "m2", "second").await, 2);
    assert_eq!(payloads(&js).await, vec!["first", "second"]);
}

#[tokio::test]
async fn restart_keeps_port_and_store_and_the_client_reconnects() {
    let mut server = TestServer::start_default().await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    publish(&js, "before-1", "one").await;
    publish(&js, "before-2", "two").await;
    let (port, pid) = (server.port(), server.pid());

    server.restart().await.expect("the server restarts");

    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), pid);
    assert!(server.is_running());
    // The same client, never reconnected by hand.
    assert_eq!(publish_retrying(&js, "after-1", "three").await, 3);
    assert_eq!(payloads(&js).await, vec!["one", "two", "three"]);
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
}

#[tokio::test]
async fn acknowledged_appends_survive_a_kill() {
    let mut server = TestServer::start_default().await;
    let js = server.jetstream().await;
    create_stream(&js).await;
    publish(&js, "m1", "acked").await;

    server.kill().expect("the server is killed");
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    server.restart().await.expect("the server starts again");

    assert_eq!(publish_retrying(&js, "m2", "after").await, 2);
    assert_eq!(payloads(&js).await, vec!["acked", "after"]);
}

#[tokio::test]
async fn stop_is_graceful_and_can_be_repeated() {
    let mut server = TestServer::start_default().await;
    assert!(server.is_running());

    server.stop().await.expect("the server stops");
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    server
        .stop()
        .await
        .expect("stopping a stopped server is a no-op");

    let log = std::fs::read_to_string(server.log_path()).expect("the log exists");
    assert!(log.contains("Server is ready"), "{log}");
    // SIGTERM, not SIGKILL: JetStream shut down and flushed its store.
    assert!(log.contains("JetStream Shutdown"), "{log}");
}

#[tokio::test]
async fn sync_always_runs_on_2_10_and_later_and_is_refused_before() {
    let version = common::server_version();
    let result = TestServer::try_start(Durability::SyncAlways).await;

    if version >= SYNC_ALWAYS_MIN_VERSION {
        let server = result.expect("sync always starts on a server >= 2.10");
        assert_eq!(server.durability(), Durability::SyncAlways);
        let config = std::fs::read_to_string(server.data_dir().join(CONFIG_FILE))
            .expect("the config file exists");
        assert!(config.contains("sync_interval: always"), "{config}");
        let js = server.jetstream().await;
        create_stream(&js).await;
        assert_eq!(publish(&js, "m1", "fsynced").await, 1);
    } else {
        match result {
            Err(NatsServerError::SyncAlwaysUnsupported { version: refused }) => {
                assert_eq!(refused, version);
            }
            Err(err) => panic!("expected SyncAlwaysUnsupported, got {err}"),
            Ok(_) => panic!("sync always must be refused on {version}"),
        }
    }
}

#[tokio::test]
async fn every_installed_server_version_starts_with_default_durability() {
    let bins = common::server_bins();
    assert_eq!(bins.first(), Some(&common::server_bin()));
    for bin in bins {
        let server = TestServer::try_start_bin(bin.clone(), Durability::Default)
            .await
            .unwrap_or_else(|err| panic!("{bin:?} does not start: {err}"));
        assert!(server.version() > ServerVersion::new(2, 0, 0), "{bin:?}");
        let js = server.jetstream().await;
        create_stream(&js).await;
        assert_eq!(publish(&js, "m1", "hello").await, 1);
    }
}

#[tokio::test]
async fn a_failed_start_reports_the_server_log() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback can bind");
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = NatsServerConfig {
        port: taken.local_addr().expect("a bound address").port(),
        ..NatsServerConfig::new(common::server_bin(), dir.path())
    };

    match NatsServer::start(config).await {
        Err(NatsServerError::Exited { log_tail, .. }) => {
            assert!(log_tail.contains("address already in use"), "{log_tail}");
        }
        Err(err) => panic!("expected Exited, got {err}"),
        Ok(server) => panic!("started on a taken port {}", server.port()),
    }
}

#[tokio::test]
async fn a_missing_binary_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = NatsServerConfig::new(dir.path().join("no-such-nats-server"), dir.path());

    let err = NatsServer::start(config).await.expect_err("nothing to run");
    assert!(matches!(err, NatsServerError::Binary { .. }), "{err}");
}
