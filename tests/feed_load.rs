//! A measurement, not a test (ignored; no timing is asserted): the JSON feed's lag and throughput
//! at the benchmark's load. `serve --role writer,feed` runs as a process of its own against a real
//! nats-server while whole session lifecycles arrive in batch requests, 4 in flight (the way the
//! bridge coalesces the benchmark's 256 clients). Prints:
//!
//! - the write rate, and the feed's lag (log last sequence minus the feed's last, sampled every
//!   10 ms while writing): median, p99, max, and how long after the last write the feed had it all;
//! - the catch-up rate: the feed stream deleted, a feed role alone republishes the whole log.
//!
//! ```sh
//! FEED_LOAD_SESSIONS=40000 cargo nextest run --test feed_load --run-ignored only --no-capture
//! ```

mod common;
mod feed_support;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::TestServer;
use feed_support::{lifecycles, register_vms, serve};
use orchestrator::client::CommandClient;
use orchestrator::log::Reader;
use orchestrator_events::CellId;

async fn feed_last(js: &jetstream::Context) -> u64 {
    match js.get_stream("ORCH_DEFAULT_FEED").await {
        Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

async fn wait_for(js: &jetstream::Context, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while feed_last(js).await < n {
        assert!(Instant::now() < deadline, "the feed never caught up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it with --run-ignored only"]
async fn feed_lag_and_throughput_at_the_benchmarks_load() {
    let sessions: usize = std::env::var("FEED_LOAD_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40_000);
    let server = TestServer::start_default().await;
    let url = server.url();
    let data = server.dir().join("orchestrator");
    let mut orchestrator = serve(&url, &data, "writer,feed");
    let commands = CommandClient::new(
        server.client().await,
        CellId::default_cell(),
        Duration::from_secs(60),
    );
    register_vms(&commands, 20).await;
    let js = server.jetstream().await;
    let reader = Reader::new(js.clone(), CellId::default_cell())
        .await
        .unwrap();

    // Live: the lag sampled while the writer appends as fast as the batches come.
    let done = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (js, reader, done) = (js.clone(), reader.clone(), done.clone());
        tokio::spawn(async move {
            let mut lags = Vec::new();
            while !done.is_cancelled() {
                let last = reader.last_seq().await.unwrap();
                lags.push(last.saturating_sub(feed_last(&js).await));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            lags
        })
    };
    let started = Instant::now();
    lifecycles(&commands, 0, sessions).await;
    let wrote = started.elapsed();
    let last = reader.last_seq().await.unwrap();
    wait_for(&js, last).await;
    let caught_up = started.elapsed();
    done.cancel();
    let mut lags = sampler.await.unwrap();
    lags.sort_unstable();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    println!(
        "live: {last} events written in {:.2} s ({:.0} events/s); feed lag median {} p99 {} max {} \
         events ({} samples); the feed had them all {:.0} ms after the last write",
        wrote.as_secs_f64(),
        last as f64 / wrote.as_secs_f64(),
        at(0.5),
        at(0.99),
        at(1.0),
        lags.len(),
        (caught_up - wrote).as_secs_f64() * 1000.0
    );
    orchestrator.start_kill().unwrap();
    orchestrator.wait().await.unwrap();

    // Catch-up: the feed stream deleted, a feed role alone republishes the whole log.
    js.delete_stream("ORCH_DEFAULT_FEED").await.unwrap();
    let started = Instant::now();
    let mut feed = serve(&url, &data, "feed");
    wait_for(&js, last).await;
    let took = started.elapsed();
    println!(
        "catch-up: {last} events republished in {:.2} s ({:.0} events/s, process start included)",
        took.as_secs_f64(),
        last as f64 / took.as_secs_f64()
    );
    feed.start_kill().unwrap();
}
