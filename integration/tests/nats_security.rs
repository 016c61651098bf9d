//! The capacity bus behind credentials and TLS: a NATS server of the test's own (the machine's
//! `nats-server`, a user with a password, a certificate from a CA made with openssl) that Basalt's
//! scheduler and volume node reach with `--nats-user`, `BASALT_NATS_PASSWORD` and
//! `--nats-tls-ca`, while clients without the password, or without the CA, are refused.

use std::{ffi::OsString, path::Path, process::Command};

use anyhow::{Context, Result, bail, ensure};
use basalt::{
    bus::{Bus, NatsSecurity},
    ids::NodeId,
    proto::ListPoolsRequest,
    tls::Role,
};
use basalt_integration::{private_servers::NatsServer, *};

const PASSWORD: &str = "nats-test-secret-7f3a";

fn run(command: &mut Command) -> Result<()> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    ensure!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// A CA and a server certificate for 127.0.0.1 in `dir`.
fn certificates(dir: &Path) -> Result<()> {
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=basalt-test-ca",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "server.ext",
    ])
}

/// `nats-server` with a user, a password and TLS.
fn secure_nats(dir: &Path) -> Result<NatsServer> {
    // The password is on this test server's own command line only.
    let mut flags: Vec<OsString> =
        ["--user", "basalt", "--pass", PASSWORD, "--tls", "--tlscert"].into_iter().map(OsString::from).collect();
    flags.extend([dir.join("server.pem").into(), "--tlskey".into(), dir.join("server.key").into()]);
    NatsServer::start_with(flags)
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_reports_travel_only_with_credentials_over_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    certificates(dir.path())?;
    let nats = secure_nats(dir.path())?;
    let ca = dir.path().join("ca.pem");
    let namespace = bus_namespace();
    let with = |user: Option<(&str, &str)>, tls: bool| NatsSecurity {
        user: user.map(|(user, password)| (user.to_owned(), password.to_owned())),
        tls_ca: tls.then(|| ca.clone()),
        ..Default::default()
    };
    for (what, security) in [
        ("no credentials", with(None, true)),
        ("a wrong password", with(Some(("basalt", "guess")), true)),
        ("no CA for the server's certificate", with(Some(("basalt", PASSWORD)), false)),
    ] {
        match Bus::connect_nats(&nats.url(), &namespace, &security).await {
            Ok(_) => bail!("connected with {what}"),
            Err(error) => {
                ensure!(!error.message.contains(PASSWORD), "the error quotes the password: {}", error.message)
            }
        }
    }
    Bus::connect_nats(&nats.url(), &namespace, &with(Some(("basalt", PASSWORD)), true)).await?;

    // A scheduler and a node as processes, on that bus: the node's pool reaches the scheduler.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let database = format!("sqlite://{}?mode=rwc", data.join("basalt.db").display());
    let key = data.join("secret.key");
    let volumes = data.join("volumes");
    let ca_arg = ca.to_str().context("utf-8")?;
    let nats_url = nats.url();
    let bus_args = [
        "--nats-url",
        nats_url.as_str(),
        "--bus-namespace",
        &namespace,
        "--nats-user",
        "basalt",
        "--nats-tls-ca",
        ca_arg,
    ];
    let env = [("BASALT_NATS_PASSWORD", PASSWORD)];
    let key_arg = key.to_str().context("utf-8")?;
    let scheduler_tls = pki().args(&Role::Scheduler);
    let scheduler_args = [
        &["scheduler", "--listen", "127.0.0.1:0", "--database-url", &database, "--secret-key-file", key_arg][..],
        &bus_args,
        &scheduler_tls.iter().map(String::as_str).collect::<Vec<_>>(),
    ]
    .concat();
    let scheduler = BasaltProcess::spawn(&scheduler_args, &env, &["grpc"])?;
    let node_tls = pki().args(&Role::Node(NodeId::parse("secure-node")?));
    let node_args = [
        &[
            "volume-node",
            "--node-id",
            "secure-node",
            "--data-dir",
            volumes.to_str().context("utf-8")?,
            "--listen",
            "127.0.0.1:0",
            "--report-interval-ms",
            "200",
        ][..],
        &bus_args,
        &node_tls.iter().map(String::as_str).collect::<Vec<_>>(),
    ]
    .concat();
    let _node = BasaltProcess::spawn(&node_args, &env, &["grpc"])?;
    let client = volume_client(scheduler.endpoint("grpc")).await?;
    let operator = admin("nats");
    eventually("the node's pool reaches the scheduler over the secured bus", || {
        let mut client = client.clone();
        let request = operator.request(ListPoolsRequest::default());
        async move {
            Ok(client
                .list_pools(request)
                .await?
                .into_inner()
                .pools
                .iter()
                .any(|pool| pool.name.starts_with("secure-node")))
        }
    })
    .await?;

    // A service without the password does not start, and says why without quoting a secret.
    let output = Command::new(basalt_binary()?).args(&scheduler_args).output()?;
    let said = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "a scheduler without the NATS password started");
    ensure!(said.contains("BASALT_NATS_PASSWORD"), "{said}");
    Ok(())
}
