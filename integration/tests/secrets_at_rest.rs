//! CHAP passwords at rest: sealed in the database with a key kept beside it (never in it), shown
//! to the attachment's own project only, and carried over a key rotation by `basalt
//! reseal-secrets`, after which the old key is no longer needed.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use basalt_integration::*;
use serde_json::Value;

const PROJECT: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75e";
const OTHER: &str = "0febe0febe0febe0febe0febe0febe0f";

struct Rest {
    base: String,
    http: reqwest::Client,
}

impl Rest {
    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<String>) -> Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("x-auth-token", token)
            .header("openstack-api-version", "volume 3.71");
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "{method} {path}: {status} {text}");
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }
}

fn password_of(attachment: &Value) -> Option<&str> {
    attachment["attachment"]["connection_info"]["data"]["auth_password"].as_str()
}

/// Creates a volume as `owner` and attaches it to `host` with a connector: the attachment.
async fn attach_new_volume(rest: &Rest, owner: &str, host: &str) -> Result<Value> {
    let created = rest
        .call(reqwest::Method::POST, &format!("{PROJECT}/volumes"), owner, Some(r#"{"volume": {"size": 1}}"#.into()))
        .await?;
    let volume = created["volume"]["id"].as_str().context("volume id")?.to_owned();
    let volume_path = format!("{PROJECT}/volumes/{volume}");
    eventually("the volume is available", || {
        let shown = rest.call(reqwest::Method::GET, &volume_path, owner, None);
        async move { Ok(shown.await?["volume"]["status"] == "available") }
    })
    .await?;
    rest.call(
        reqwest::Method::POST,
        &format!("{PROJECT}/attachments"),
        owner,
        Some(format!(
            r#"{{"attachment": {{"volume_uuid": "{volume}", "instance_uuid": "11111111-2222-3333-4444-555555555555",
                "connector": {{"initiator": "iqn.1993-08.org.debian:01:{host}", "host": "{host}", "ip": "127.0.0.1"}}}}}}"#
        )),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn chap_passwords_are_sealed_in_the_database_and_survive_a_key_rotation() -> Result<()> {
    let tgtd = Tgtd::start()?;
    let data = tempfile::tempdir()?;
    let export_flags = tgtd.export_flags();
    let flags: Vec<&str> = export_flags.iter().map(String::as_str).collect();
    let up = BasaltProcess::up(data.path(), &flags, &[])?;
    let rest = Rest { base: format!("{}/", up.endpoint("rest")), http: reqwest::Client::new() };
    let owner = format!("alice:{PROJECT}");
    let attached = attach_new_volume(&rest, &owner, "sealed").await?;
    let attachment = attached["attachment"]["id"].as_str().context("attachment id")?.to_owned();
    let password = password_of(&attached).context("a CHAP password")?.to_owned();
    ensure!(password.len() >= 12, "a real password");

    // The owner sees it; an admin looking across projects does not.
    let shown = rest.call(reqwest::Method::GET, &format!("{PROJECT}/attachments/{attachment}"), &owner, None).await?;
    ensure!(password_of(&shown) == Some(password.as_str()), "the owner reads the password back: {shown}");
    let across = rest
        .call(
            reqwest::Method::GET,
            &format!("{OTHER}/attachments/detail?all_tenants=1"),
            &format!("admin:{OTHER}"),
            None,
        )
        .await?;
    let listed = across["attachments"].as_array().context("attachments")?;
    ensure!(listed.iter().any(|item| item["id"] == attachment.as_str()), "the admin lists it: {across}");
    ensure!(!across.to_string().contains(&password), "another project's admin sees the password: {across}");

    // Not in the database's files (the WAL included), nor the key in the database.
    let key_text = std::fs::read_to_string(data.path().join("secret.key"))?;
    let stored = |needle: &str| -> Result<bool> {
        for entry in std::fs::read_dir(data.path())? {
            let path = entry?.path();
            if path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("basalt.db")) {
                let bytes = std::fs::read(&path)?;
                if bytes.windows(needle.len()).any(|window| window == needle.as_bytes()) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    };
    ensure!(!stored(&password)?, "the CHAP password is in the database in clear");
    ensure!(!stored(key_text.trim())?, "the key is in the database");
    drop(up);

    // Rotation: a new key, the old one given as previous; then the new key alone reads it.
    let new_key = data.path().join("new.key");
    let database = format!("sqlite://{}?mode=rwc", data.path().join("basalt.db").display());
    let reseal = |previous: bool| -> Result<String> {
        let mut command = Command::new(basalt_binary()?);
        command.args(["reseal-secrets", "--database-url", &database, "--secret-key-file"]).arg(&new_key);
        if previous {
            command.arg("--previous-secret-key-file").arg(data.path().join("secret.key"));
        }
        let output = command.output()?;
        ensure!(output.status.success(), "reseal-secrets: {}", String::from_utf8_lossy(&output.stderr));
        Ok(String::from_utf8(output.stdout)?)
    };
    ensure!(reseal(true)?.contains("resealed: 1"), "one attachment resealed");
    ensure!(reseal(false)?.contains("resealed: 0"), "a repeat changes nothing and needs no old key");
    std::fs::remove_file(data.path().join("secret.key"))?;
    let key = new_key.to_str().context("utf-8")?;
    let mut flags = flags.clone();
    flags.extend(["--secret-key-file", key]);
    let up = BasaltProcess::up(data.path(), &flags, &[])?;
    let rest = Rest { base: format!("{}/", up.endpoint("rest")), http: reqwest::Client::new() };
    let shown = rest.call(reqwest::Method::GET, &format!("{PROJECT}/attachments/{attachment}"), &owner, None).await?;
    ensure!(password_of(&shown) == Some(password.as_str()), "the password reads back under the new key: {shown}");
    Ok(())
}

/// The distributed topology: a password one `basalt scheduler` sealed is opened by the other and
/// by itself after a restart, since all of them read the deployment's key file.
#[tokio::test(flavor = "multi_thread")]
async fn every_scheduler_opens_what_another_sealed_across_restarts() -> Result<()> {
    let tgtd = Tgtd::start()?;
    let export_flags = tgtd.export_flags();
    let flags: Vec<&str> = export_flags.iter().map(String::as_str).collect();
    let mut mesh = ProcessMesh::start(None, 2, 1, &flags)?;
    mesh.wait_for_nodes(0).await?;
    let gateways = [mesh.spawn_gateway(0)?, mesh.spawn_gateway(1)?];
    let rest: Vec<Rest> = gateways
        .iter()
        .map(|gateway| Rest { base: format!("{}/", gateway.endpoint("rest")), http: reqwest::Client::new() })
        .collect();
    let owner = format!("alice:{PROJECT}");
    let attached = attach_new_volume(&rest[0], &owner, "shared").await?;
    let attachment_path = format!("{PROJECT}/attachments/{}", attached["attachment"]["id"].as_str().context("id")?);
    let password = password_of(&attached).context("a CHAP password")?.to_owned();

    let through_other = rest[1].call(reqwest::Method::GET, &attachment_path, &owner, None).await?;
    ensure!(password_of(&through_other) == Some(password.as_str()), "the other scheduler: {through_other}");
    mesh.kill_scheduler(0);
    mesh.restart_scheduler(0)?;
    let after_restart = rest[0].call(reqwest::Method::GET, &attachment_path, &owner, None).await?;
    ensure!(password_of(&after_restart) == Some(password.as_str()), "after a restart: {after_restart}");
    Ok(())
}
