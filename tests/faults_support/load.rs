//! Load for the fault tests: workers that play sessions (start, place, end) as fast as the writer
//! answers, each command sent like a client that retries with the same command id until it gets an
//! answer, and an independent ledger of every answer, kept by the test and not by the system.

use super::*;

/// How long one command may go unanswered, retries included, before the test fails.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(90);

/// What the workers were told, written by the test.
#[derive(Default)]
pub struct Ledger {
    /// Command id → the sequence its acceptance named.
    pub accepted: BTreeMap<String, u64>,
    /// Command id → the code of its refusal (`no_capacity` when every slot is taken).
    pub rejected: BTreeMap<String, String>,
    /// When each acceptance arrived, in order.
    pub accepted_at: Vec<Instant>,
    /// Sends that got no answer (a timeout, no responders, `unavailable`) and were retried.
    pub retries: u64,
}

impl Ledger {
    /// The longest time without an acceptance between `from` and the last one: how long the cell
    /// stopped serving around a fault at `from`.
    pub fn longest_gap_since(&self, from: Instant) -> Duration {
        let mut previous = from;
        let mut longest = Duration::ZERO;
        for &at in self.accepted_at.iter().filter(|&&at| at >= from) {
            longest = longest.max(at - previous);
            previous = at;
        }
        longest
    }
}

/// Workers sending commands until [`Load::finish`].
pub struct Load {
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// `workers` workers, each with a user of its own (one live session at a time, under the
    /// per-user quota), their command ids prefixed with `prefix`.
    pub fn start(commands: &CommandClient, workers: usize, prefix: &str) -> Load {
        let ledger: Arc<Mutex<Ledger>> = Default::default();
        let stop = CancellationToken::new();
        let workers = (0..workers)
            .map(|w| {
                let (commands, ledger, stop) = (commands.clone(), ledger.clone(), stop.clone());
                let prefix = format!("{prefix}-w{w}");
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.is_cancelled() {
                        let session = format!("{prefix}-s{i}");
                        // `check_ledger` derives the user from the session id the same way.
                        let user = format!("{prefix}-u");
                        let steps = [
                            (format!("{session}-start"), start(&session, &user)),
                            (format!("{session}-assign"), assign(&session)),
                            (format!("{session}-end"), end(&session)),
                        ];
                        // A session once started is always ended, so that the user's quota frees.
                        for (id, command) in steps {
                            let reply = send_retrying(&commands, &id, &command, &ledger).await;
                            let mut ledger = ledger.lock().unwrap();
                            match accepted(&reply) {
                                Some(seq) => {
                                    ledger.accepted.insert(id, seq);
                                    ledger.accepted_at.push(Instant::now());
                                }
                                None => {
                                    ledger.rejected.insert(id, code(&reply).to_owned());
                                }
                            }
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Load {
            ledger,
            stop,
            workers,
        }
    }

    /// Acceptances so far.
    pub fn accepted(&self) -> usize {
        self.ledger.lock().unwrap().accepted.len()
    }

    /// Waits until `more` commands have been accepted after this call; panics after `within`.
    pub async fn wait_accepted(&self, more: usize, within: Duration) {
        if let Err(e) = self.try_wait_accepted(more, within).await {
            panic!("{e}");
        }
    }

    /// Waits until `more` commands have been accepted after this call, or says how many were after
    /// `within`.
    pub async fn try_wait_accepted(&self, more: usize, within: Duration) -> Result<(), String> {
        let target = self.accepted() + more;
        let deadline = Instant::now() + within;
        while self.accepted() < target {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} of {more} more commands accepted within {within:?}",
                    self.accepted() + more - target
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops the workers once their sessions are ended (every command answered) and returns the
    /// ledger.
    pub async fn finish(self) -> Ledger {
        self.stop.cancel();
        for worker in self.workers {
            worker.await.expect("a load worker panicked");
        }
        Arc::try_unwrap(self.ledger)
            .unwrap_or_else(|_| panic!("the workers are done"))
            .into_inner()
            .unwrap()
    }
}

/// Sends until the writer answers (an acceptance or a refusal other than `unavailable`), with the
/// same command id each time; panics after [`ANSWER_WITHIN`].
async fn send_retrying(
    commands: &CommandClient,
    id: &str,
    command: &Command,
    ledger: &Mutex<Ledger>,
) -> Reply {
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let last = match commands.send(&cid(id), &actor(), command).await {
            Ok(reply) if code(&reply) != "unavailable" => return reply,
            Ok(reply) => format!("{reply:?}"),
            Err(e) => e.to_string(),
        };
        ledger.lock().unwrap().retries += 1;
        assert!(
            Instant::now() < deadline,
            "command {id} got no answer within {ANSWER_WITHIN:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a fault test checks once the load is over, against the log itself: every accepted command is
/// in the log exactly once at the sequence its acceptance named, no command id twice, no VM ever over
/// capacity (replayed event by event), a sample of retries answered with the first answer, and
/// `verify` clean at the log's end. Returns the replay.
pub async fn check_ledger(
    client: &async_nats::Client,
    commands: &CommandClient,
    ledger: &Ledger,
) -> Replayed {
    let events = read_log(client).await;
    let replayed = replay(&events);
    for (id, seq) in &ledger.accepted {
        assert_eq!(
            replayed.by_command.get(id),
            Some(seq),
            "accepted command {id} is not in the log at {seq}"
        );
    }
    for id in ledger.rejected.keys() {
        assert!(
            !replayed.by_command.contains_key(id),
            "refused command {id} is in the log"
        );
    }
    // Retries of accepted commands (every 50th) get their first answer back.
    let deadline = Instant::now() + ANSWER_WITHIN;
    for (id, seq) in ledger.accepted.iter().step_by(50) {
        let command = if let Some(session) = id.strip_suffix("-start") {
            let worker = session.rsplit_once("-s").expect("a load session id").0;
            start(session, &format!("{worker}-u"))
        } else if id.ends_with("-assign") {
            assign(id.trim_end_matches("-assign"))
        } else {
            end(id.trim_end_matches("-end"))
        };
        let reply = send_until_answered(commands, id, &command, deadline).await;
        assert_eq!(accepted(&reply), Some(*seq), "retry of {id}: {reply:?}");
    }
    verify_clean_at(client, replayed.last, Duration::from_secs(60)).await;
    replayed
}
