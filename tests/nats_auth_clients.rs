//! NATS secured, from the clients' side: an unauthenticated client, a wrong password and a client
//! that does not trust the certificate are refused; `nats-user add` gives a new consumer access
//! without a restart.

mod common;
mod nats_auth_support;

use nats_auth_support::*;

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

#[tokio::test]
async fn nats_user_add_gives_a_new_consumer_access_without_a_restart() {
    let data = tempfile::tempdir().expect("a temp dir");
    let nats_dir = data.path().join("nats");
    let auth = credentials::load_or_generate(&nats_dir.join(CREDENTIALS_FILE), &cell())
        .expect("generated");
    let config = NatsServerConfig {
        auth: Some(auth),
        ..NatsServerConfig::new(common::server_bin(), &nats_dir)
    };
    let server = NatsServer::start(config).await.expect("a secured server");

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

    let cli =
        orchestrator::cli::nats_user::NatsUserCommand::Add(orchestrator::cli::nats_user::AddArgs {
            name: "analytics".into(),
            role: NatsRole::Reader,
            file: orchestrator::cli::nats_user::FileArgs {
                data_dir: data.path().to_path_buf(),
            },
        });
    orchestrator::cli::nats_user::run(cli).expect("nats-user add");
    let users = credentials::load(&nats_dir.join(CREDENTIALS_FILE)).expect("the file");
    let analytics = users
        .users
        .iter()
        .find(|u| u.name == "analytics")
        .expect("written")
        .clone();
    let analytics = ClientAuth::user(analytics.name, analytics.password);
    let deadline = Instant::now() + WAIT;
    loop {
        let connected = analytics
            .apply(ConnectOptions::new())
            .connection_timeout(Duration::from_secs(2))
            .connect(server.url())
            .await;
        match connected {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "never let in: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
