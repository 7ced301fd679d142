//! The writer lease in its JetStream KV bucket, against a real `nats-server`: exclusive while
//! renewed, taken over once it lapses (the old holder sees it lost), lost when another takes it, and
//! independent per cell.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestServer;
use orchestrator::log::{ensure_lease_bucket, Lease, LeaseError, DEFAULT_LEASE_BUCKET};
use orchestrator_events::CellId;
use tokio_util::sync::CancellationToken;

async fn setup() -> (TestServer, async_nats::jetstream::Context) {
    let server = TestServer::start_default().await;
    let js = server.jetstream().await;
    (server, js)
}

fn cell() -> CellId {
    CellId::default_cell()
}

const TTL: Duration = Duration::from_secs(1);

#[tokio::test]
async fn lease_is_exclusive_while_renewed() {
    let (_s, js) = setup().await;
    let kv = ensure_lease_bucket(&js, DEFAULT_LEASE_BUCKET, 1)
        .await
        .unwrap();
    // Idempotent, like the event stream.
    ensure_lease_bucket(&js, DEFAULT_LEASE_BUCKET, 1)
        .await
        .unwrap();
    let a = Lease::try_acquire(&kv, &cell(), "a", TTL)
        .await
        .unwrap()
        .expect("free");
    let handle = a.keep_alive();
    let cancel = CancellationToken::new();
    let waiter = {
        let (kv, cancel) = (kv.clone(), cancel.clone());
        tokio::spawn(async move { Lease::acquire(&kv, &cell(), "b", TTL, &cancel).await })
    };
    tokio::time::sleep(TTL * 3).await;
    assert!(
        !waiter.is_finished(),
        "b must not get the lease while a renews it"
    );
    assert!(!handle.is_lost());
    assert!(Lease::try_acquire(&kv, &cell(), "c", TTL)
        .await
        .unwrap()
        .is_none());

    // A graceful release hands over at once.
    let released = Instant::now();
    handle.release().await.unwrap();
    let b = tokio::time::timeout(TTL * 2, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    println!("takeover after release: {:?}", released.elapsed());
    assert_eq!(b.holder(), "b");
}

#[tokio::test]
async fn standby_takes_over_a_lapsed_lease_and_the_old_holder_sees_lost() {
    let (_s, js) = setup().await;
    let kv = ensure_lease_bucket(&js, DEFAULT_LEASE_BUCKET, 1)
        .await
        .unwrap();
    let mut a = Lease::try_acquire(&kv, &cell(), "a", TTL)
        .await
        .unwrap()
        .unwrap();
    a.renew().await.unwrap();
    let stopped = Instant::now(); // a stops renewing here
    let b = Lease::acquire(&kv, &cell(), "b", TTL, &CancellationToken::new())
        .await
        .unwrap();
    let took = stopped.elapsed();
    println!("takeover after the holder stopped renewing: {took:?}");
    assert!(took <= TTL * 2 + Duration::from_millis(500), "{took:?}");
    assert_eq!(b.holder(), "b");
    match a.renew().await {
        Err(LeaseError::Lost { holder }) => assert_eq!(holder.as_deref(), Some("b")),
        other => panic!("expected Lost, got {other:?}"),
    }
    // Releasing a lost lease is harmless and leaves b in place.
    a.release().await.unwrap();
    assert!(Lease::try_acquire(&kv, &cell(), "c", TTL)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn handle_fires_lost_when_the_lease_is_taken() {
    let (_s, js) = setup().await;
    let kv = ensure_lease_bucket(&js, DEFAULT_LEASE_BUCKET, 1)
        .await
        .unwrap();
    let a = Lease::try_acquire(&kv, &cell(), "a", TTL)
        .await
        .unwrap()
        .unwrap();
    let handle = a.keep_alive();
    // Someone overwrites the key behind the holder's back.
    kv.put(
        "writer.default",
        Bytes::from_static(br#"{"holder":"x","expires_at_ms":1,"ttl_ms":1000}"#),
    )
    .await
    .unwrap();
    tokio::time::timeout(TTL * 2, handle.lost().cancelled())
        .await
        .expect("lost fires");
    assert!(handle.is_lost());
    handle.release().await.unwrap();
}

#[tokio::test]
async fn leases_of_cells_are_independent() {
    let (_s, js) = setup().await;
    let kv = ensure_lease_bucket(&js, DEFAULT_LEASE_BUCKET, 1)
        .await
        .unwrap();
    let eu = CellId::parse("eu-1").unwrap();
    assert!(Lease::try_acquire(&kv, &cell(), "a", TTL)
        .await
        .unwrap()
        .is_some());
    assert!(Lease::try_acquire(&kv, &eu, "b", TTL)
        .await
        .unwrap()
        .is_some());
}
