//! NATS secured, from the clients' side: an unauthenticated client, a wrong password and a client
//! that does not trust the certificate are refused; `nats-user add` gives a new consumer access
//! and `nats-user remove` takes it away (its open connection included), without a restart.

mod common;
mod nats_auth_support;

use nats_auth_support::*;
use orchestrator::cli::nats_user::{AddArgs, FileArgs, NatsUserCommand, RemoveArgs};

#[tokio::test]
async fn unauthenticated_clients_and_wrong_passwords_are_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (auth, _) = users(dir.path());
    let writer = auth.user(NatsRole::Writer).expect("a writer").name.clone();
    let server = TestServer::start_secured(auth, None).await;
    let nobody = ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(server.url())
        .await;
    assert!(nobody.is_err(), "a client without a user is refused");
    let wrong = ClientAuth::user(writer, "not-the-password")
        .apply(ConnectOptions::new())
        .connection_timeout(Duration::from_secs(2))
        .connect(server.url())
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");
}

#[tokio::test]
async fn tls_refuses_a_client_that_does_not_trust_the_certificate() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (auth, _) = users(dir.path());
    let tls = certificate(dir.path());
    let server = TestServer::start_secured(auth, Some(tls)).await;
    let user = server.client_auth(NatsRole::Reader);
    let untrusting = ClientAuth {
        tls_root: None,
        tls_required: false,
        ..user.clone()
    }
    .apply(ConnectOptions::new())
    .connection_timeout(Duration::from_secs(2))
    .connect(server.url())
    .await;
    assert!(
        untrusting.is_err(),
        "the system's roots do not know this certificate"
    );
    let (trusting, _) = connect(&server, &user).await;
    trusting
        .flush()
        .await
        .expect("a TLS connection with the CA works");
}

/// A secured embedded server on a fresh data dir's `nats/`, as `serve --nats-auth` runs one.
async fn secured_data_dir() -> (tempfile::TempDir, PathBuf, NatsServer) {
    let data = tempfile::tempdir().expect("a temp dir");
    let nats_dir = data.path().join("nats");
    let auth = credentials::load_or_generate(&nats_dir.join(CREDENTIALS_FILE), &cell())
        .expect("generated");
    let config = NatsServerConfig {
        auth: Some(auth),
        ..NatsServerConfig::new(common::server_bin(), &nats_dir)
    };
    let server = NatsServer::start(config).await.expect("a secured server");
    (data, nats_dir, server)
}

fn nats_user(command: NatsUserCommand) -> Result<(), orchestrator::cli::CliError> {
    orchestrator::cli::nats_user::run(command)
}

fn users_of(data_dir: &Path) -> FileArgs {
    FileArgs {
        data_dir: data_dir.to_path_buf(),
    }
}

/// `nats-user add --role reader <name>`, then waits until the server lets the user in; the user.
async fn add_reader(server: &NatsServer, data_dir: &Path, name: &str) -> ClientAuth {
    nats_user(NatsUserCommand::Add(AddArgs {
        name: name.into(),
        role: NatsRole::Reader,
        file: users_of(data_dir),
    }))
    .expect("nats-user add");
    let user = as_in_file(&data_dir.join("nats"), name);
    until_admitted(server, &user, true).await;
    user
}

/// The user `name` as the credentials file under `nats_dir` has it.
fn as_in_file(nats_dir: &Path, name: &str) -> ClientAuth {
    let users = credentials::load(&nats_dir.join(CREDENTIALS_FILE)).expect("the file");
    let user = users
        .users
        .iter()
        .find(|u| u.name == name)
        .expect("written")
        .clone();
    ClientAuth::user(user.name, user.password)
}

/// Tries to connect as `auth` until the server's answer is `admitted` (it reloads its users on
/// SIGHUP, a moment after the signal).
async fn until_admitted(server: &NatsServer, auth: &ClientAuth, admitted: bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let connected = auth
            .apply(ConnectOptions::new())
            .connection_timeout(Duration::from_secs(2))
            .connect(server.url())
            .await;
        if connected.is_ok() == admitted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after {WAIT:?}",
            if admitted { "refused" } else { "let in" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nats_user_add_gives_a_new_consumer_access_without_a_restart() {
    let (data, nats_dir, server) = secured_data_dir().await;

    let added = orchestrator::nats_server::credentials::add_user(
        &nats_dir.join(CREDENTIALS_FILE),
        "analytics-probe",
        NatsRole::Reader,
    )
    .expect("added");
    let as_added = ClientAuth::user(added.name.clone(), added.password.clone());
    let unknown = as_added
        .apply(ConnectOptions::new())
        .connection_timeout(Duration::from_secs(2))
        .connect(server.url())
        .await;
    assert!(unknown.is_err(), "unknown to the server until it reloads");

    let analytics = add_reader(&server, data.path(), "analytics").await;
    // The user added to the file before is in too: the reload reads the whole file.
    let _ = connect(&server, &as_added).await;

    // A reader all the same: it reads the log's stream info, it may not send commands.
    let (client, mut errors) = connect(&server, &analytics).await;
    let subject = format!("orch.{}.cmd.register_vm", cell());
    client
        .publish(subject.clone(), "x".into())
        .await
        .expect("sent");
    refused(&mut errors, "publish", &subject).await;
}

#[tokio::test]
async fn nats_user_remove_cuts_the_user_off_without_a_restart() {
    let (data, nats_dir, server) = secured_data_dir().await;
    let remove = |name: &str| {
        nats_user(NatsUserCommand::Remove(RemoveArgs {
            name: name.into(),
            file: users_of(data.path()),
        }))
    };
    let analytics = add_reader(&server, data.path(), "analytics").await;
    let (connected, _errors) = connect(&server, &analytics).await;
    let (reader, _) = connect_as(&server, NatsRole::Reader).await;

    remove("analytics").expect("nats-user remove");
    // The server closes the connection it has, and refuses new ones.
    let deadline = Instant::now() + WAIT;
    while connected.connection_state() == async_nats::connection::State::Connected {
        assert!(Instant::now() < deadline, "still connected after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until_admitted(&server, &analytics, false).await;
    // Everyone else stays in, on the connection they had (never dropped and made again).
    assert_eq!(
        reader.connection_state(),
        async_nats::connection::State::Connected
    );
    assert_eq!(
        reader
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    reader
        .flush()
        .await
        .expect("the orchestrator's reader is still in");

    let gone = remove("analytics").expect_err("removed already");
    assert!(gone.to_string().contains("no user"), "{gone}");
    let own = remove("reader").expect_err("the orchestrator's own reader");
    assert!(own.to_string().contains("cannot be removed"), "{own}");
    let users = credentials::load(&nats_dir.join(CREDENTIALS_FILE)).expect("the file");
    assert!(users.user(NatsRole::Reader).is_some(), "kept");
}
