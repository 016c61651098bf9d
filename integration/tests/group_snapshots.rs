//! Group snapshots and groups made from a source (Cinder 3.14) over REST: every member cut at one
//! point in time, on the file backend and through a real tgtd whose initiators keep writing;
//! groups copied from a group snapshot or from a group; quotas, views and refusals as Cinder's.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, Result, bail, ensure};
use axum::http::{Method, StatusCode};
use basalt_integration::*;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const OTHER: &str = "fedcba9876543210fedcba9876543210";
const HOST: &str = "iqn.2024-01.org.basalt.test:group-host";

async fn usage(api: &RestApi, admin: &RestCaller, resource: &str) -> Result<i64> {
    let reply = admin.call(api, Method::GET, &format!("/os-quota-sets/{PROJECT}?usage=true"), "3.0", None).await?;
    reply.body["quota_set"][resource]["in_use"].as_i64().with_context(|| format!("{resource}: {:?}", reply.body))
}

async fn created_id(reply: RestReply, key: &str) -> Result<String> {
    ensure!(reply.status == StatusCode::ACCEPTED, "{:?}", reply.body);
    Ok(reply.body[key]["id"].as_str().with_context(|| format!("no {key} id in {:?}", reply.body))?.to_owned())
}

/// A group of the default types with `count` available volumes.
async fn group_with_volumes(api: &RestApi, caller: &RestCaller, count: usize) -> Result<(String, Vec<String>)> {
    let body = r#"{"group": {"name": "g", "group_type": "default_group_type", "volume_types": ["__DEFAULT__"]}}"#;
    let group = created_id(caller.call(api, Method::POST, "/groups", "3.14", Some(body)).await?, "group").await?;
    let mut volumes = Vec::new();
    for index in 0..count {
        let body = format!(r#"{{"volume": {{"size": 1, "name": "member-{index}", "group_id": "{group}"}}}}"#);
        let id = created_id(caller.call(api, Method::POST, "/volumes", "3.14", Some(&body)).await?, "volume").await?;
        caller.wait_for(api, &format!("/volumes/{id}"), "volume", "available").await?;
        volumes.push(id);
    }
    Ok((group, volumes))
}

/// The member snapshots of a group snapshot, by the volume each is of.
async fn members(api: &RestApi, caller: &RestCaller, group_snapshot: &str) -> Result<Vec<(String, String)>> {
    let listed = caller.call(api, Method::GET, "/snapshots/detail", "3.14", None).await?;
    let snapshots = listed.body["snapshots"].as_array().context("a snapshot list")?;
    let mut found: Vec<(String, String)> = snapshots
        .iter()
        .filter(|snapshot| snapshot["group_snapshot_id"] == group_snapshot)
        .map(|snapshot| {
            (
                snapshot["volume_id"].as_str().unwrap_or_default().to_owned(),
                snapshot["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    Ok(found)
}

async fn snapshot_group(api: &RestApi, caller: &RestCaller, group: &str) -> Result<String> {
    let body = format!(r#"{{"group_snapshot": {{"group_id": "{group}", "name": "cut"}}}}"#);
    let reply = caller.call(api, Method::POST, "/group_snapshots", "3.14", Some(&body)).await?;
    ensure!(sorted_keys(&reply.body["group_snapshot"]) == ["group_type_id", "id", "name"], "{:?}", reply.body);
    let id = created_id(reply, "group_snapshot").await?;
    caller.wait_for_at(api, &format!("/group_snapshots/{id}"), "3.14", "group_snapshot", "available").await?;
    Ok(id)
}

/// The volumes of a group made from a source, once it is available, each with what it copied
/// (`snapshot_id` or `source_volid`).
async fn made_from(
    api: &RestApi,
    caller: &RestCaller,
    body: &str,
    copied: &str,
) -> Result<(String, Vec<(String, String)>)> {
    let reply = caller.call(api, Method::POST, "/groups/action", "3.14", Some(body)).await?;
    ensure!(sorted_keys(&reply.body["group"]) == ["id", "name"], "{:?}", reply.body);
    let group = created_id(reply, "group").await?;
    caller.wait_for_at(api, &format!("/groups/{group}"), "3.14", "group", "available").await?;
    let listed = caller.call(api, Method::GET, &format!("/volumes/detail?group_id={group}"), "3.14", None).await?;
    let mut volumes: Vec<(String, String)> = listed.body["volumes"]
        .as_array()
        .context("a volume list")?
        .iter()
        .map(|volume| {
            (
                volume[copied].as_str().unwrap_or_default().to_owned(),
                volume["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    volumes.sort();
    Ok((group, volumes))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_snapshot_cuts_every_member_and_new_groups_copy_it_or_the_group() -> Result<()> {
    let mesh = InProcessMesh::start(1).await?;
    let api = RestApi::start(&mesh).await?;
    let admin = RestCaller::new(PROJECT, "admin");
    let member = RestCaller::new(PROJECT, "alice");
    let stranger = RestCaller::new(OTHER, "bob");
    let node_dir = mesh.node_dir("node-0");
    let file = |kind: &str, id: &str| node_dir.join(format!("{kind}-{id}"));

    let (group, volumes) = group_with_volumes(&api, &member, 2).await?;
    for (index, volume) in volumes.iter().enumerate() {
        write_at(&file("volume", volume), 0, &pattern(index as u8 + 1, 4096))?;
    }
    let early = member.call(&api, Method::GET, "/group_snapshots", "3.13", None).await?;
    ensure!(early.status == StatusCode::NOT_FOUND, "group snapshots below 3.14: {:?}", early.body);
    let group_snapshot = snapshot_group(&api, &member, &group).await?;
    let cut = members(&api, &member, &group_snapshot).await?;
    ensure!(
        cut.len() == 2
            && cut.iter().map(|(volume, _)| volume).eq(volumes.iter().collect::<std::collections::BTreeSet<_>>()),
        "{cut:?}"
    );
    ensure!(usage(&api, &admin, "snapshots").await? == 2, "each member counts against the snapshots quota");
    // What the volumes hold later is not in the snapshots.
    for volume in &volumes {
        write_at(&file("volume", volume), 0, &pattern(0xee, 4096))?;
    }
    for (volume, snapshot) in &cut {
        let index = volumes.iter().position(|known| known == volume).context("a member")?;
        ensure!(
            read_at(&file("snapshot", snapshot), 0, 4096)? == pattern(index as u8 + 1, 4096),
            "snapshot of {volume}"
        );
    }

    // Views, key by key, at the microversions that change them.
    let path = format!("/group_snapshots/{group_snapshot}");
    let base = ["created_at", "description", "group_id", "group_type_id", "id", "name", "status"];
    let shown = member.call(&api, Method::GET, &path, "3.14", None).await?;
    ensure!(sorted_keys(&shown.body["group_snapshot"]) == base, "{:?}", shown.body);
    ensure!(shown.body["group_snapshot"]["group_id"] == group.as_str(), "{:?}", shown.body);
    let latest = member.call(&api, Method::GET, &path, "3.71", None).await?;
    let mut with_project: Vec<&str> = base.iter().copied().chain(["project_id"]).collect();
    with_project.sort();
    ensure!(sorted_keys(&latest.body["group_snapshot"]) == with_project, "{:?}", latest.body);
    let listed = member.call(&api, Method::GET, "/group_snapshots", "3.14", None).await?;
    ensure!(sorted_keys(&listed.body["group_snapshots"][0]) == ["group_type_id", "id", "name"], "{:?}", listed.body);
    let filtered = member
        .call(&api, Method::GET, &format!("/group_snapshots/detail?group_id={group}&status=available"), "3.14", None)
        .await?;
    ensure!(filtered.body["group_snapshots"].as_array().map(Vec::len) == Some(1), "{:?}", filtered.body);
    ensure!(stranger.call(&api, Method::GET, &path, "3.14", None).await?.status == StatusCode::NOT_FOUND);
    let snapshot_view = member.call(&api, Method::GET, &format!("/snapshots/{}", cut[0].1), "3.14", None).await?;
    ensure!(snapshot_view.body["snapshot"]["group_snapshot_id"] == group_snapshot.as_str(), "{:?}", snapshot_view.body);

    // A member goes with its group snapshot only; the group stays while it has one.
    let alone = member.call(&api, Method::DELETE, &format!("/snapshots/{}", cut[0].1), "3.14", None).await?;
    alone.assert_fault(400, "badRequest", "delete the group snapshot");
    let body = r#"{"delete": {"delete-volumes": true}}"#;
    let kept = member.call(&api, Method::POST, &format!("/groups/{group}/action"), "3.14", Some(body)).await?;
    kept.assert_fault(400, "badRequest", "group snapshots");

    // A group from the group snapshot holds what the snapshots hold.
    let body = format!(r#"{{"create-from-src": {{"name": "restored", "group_snapshot_id": "{group_snapshot}"}}}}"#);
    let (restored, copies) = made_from(&api, &member, &body, "snapshot_id").await?;
    ensure!(copies.len() == 2, "{copies:?}");
    for (snapshot, copy) in &copies {
        let (volume, _) = cut.iter().find(|(_, known)| known == snapshot).context("a copy of a member snapshot")?;
        let index = volumes.iter().position(|known| known == volume).context("a member")?;
        ensure!(read_at(&file("volume", copy), 0, 4096)? == pattern(index as u8 + 1, 4096), "copy of {snapshot}");
    }
    let shown = member.call(&api, Method::GET, &format!("/groups/{restored}"), "3.14", None).await?;
    ensure!(shown.body["group"]["group_snapshot_id"] == group_snapshot.as_str(), "{:?}", shown.body);
    ensure!(shown.body["group"]["source_group_id"].is_null(), "{:?}", shown.body);

    // A group from the group holds what its volumes hold now.
    let body = format!(r#"{{"create-from-src": {{"name": "cloned", "source_group_id": "{group}"}}}}"#);
    let (cloned, clones) = made_from(&api, &member, &body, "source_volid").await?;
    ensure!(
        clones.iter().map(|(source, _)| source).eq(volumes.iter().collect::<std::collections::BTreeSet<_>>()),
        "{clones:?}"
    );
    for (_, copy) in &clones {
        ensure!(read_at(&file("volume", copy), 0, 4096)? == pattern(0xee, 4096), "clone {copy}");
    }
    let shown = member.call(&api, Method::GET, &format!("/groups/{cloned}"), "3.14", None).await?;
    ensure!(shown.body["group"]["source_group_id"] == group.as_str(), "{:?}", shown.body);
    ensure!(usage(&api, &admin, "groups").await? == 3 && usage(&api, &admin, "volumes").await? == 6);

    let both =
        format!(r#"{{"create-from-src": {{"group_snapshot_id": "{group_snapshot}", "source_group_id": "{group}"}}}}"#);
    member.call(&api, Method::POST, "/groups/action", "3.14", Some(&both)).await?.assert_fault(
        400,
        "badRequest",
        "not both",
    );
    let neither = r#"{"create-from-src": {"name": "x"}}"#;
    member.call(&api, Method::POST, "/groups/action", "3.14", Some(neither)).await?.assert_fault(
        400,
        "badRequest",
        "group_snapshot_id",
    );
    let body = format!(r#"{{"create-from-src": {{"group_snapshot_id": "{group_snapshot}"}}}}"#);
    let foreign = stranger.call(&api, Method::POST, "/groups/action", "3.14", Some(&body)).await?;
    ensure!(foreign.status == StatusCode::NOT_FOUND, "another project copies the group snapshot: {:?}", foreign.body);

    // Admins reset a group snapshot's status (3.19); members may not.
    let reset = r#"{"reset_status": {"status": "error"}}"#;
    let action = format!("{path}/action");
    ensure!(member.call(&api, Method::POST, &action, "3.19", Some(reset)).await?.status == StatusCode::FORBIDDEN);
    ensure!(admin.call(&api, Method::POST, &action, "3.18", Some(reset)).await?.status == StatusCode::NOT_FOUND);
    ensure!(admin.call(&api, Method::POST, &action, "3.19", Some(reset)).await?.status == StatusCode::ACCEPTED);
    member.wait_for_at(&api, &path, "3.14", "group_snapshot", "error").await?;

    // Deleting the group snapshot deletes its snapshots, bytes and quota with it.
    let deleted = member.call(&api, Method::DELETE, &path, "3.14", None).await?;
    ensure!(deleted.status == StatusCode::ACCEPTED, "{:?}", deleted.body);
    eventually("the group snapshot goes", || async {
        Ok(member.call(&api, Method::GET, &path, "3.14", None).await?.status == StatusCode::NOT_FOUND)
    })
    .await?;
    for (_, snapshot) in &cut {
        ensure!(!file("snapshot", snapshot).exists(), "snapshot {snapshot} is still on the node");
    }
    ensure!(usage(&api, &admin, "snapshots").await? == 0, "the snapshots quota is back");
    for doomed in [&group, &restored, &cloned] {
        let body = r#"{"delete": {"delete-volumes": true}}"#;
        let gone = member.call(&api, Method::POST, &format!("/groups/{doomed}/action"), "3.14", Some(body)).await?;
        ensure!(gone.status == StatusCode::ACCEPTED, "{:?}", gone.body);
    }
    eventually("every group and volume goes", || async { Ok(usage(&api, &admin, "volumes").await? == 0) }).await?;
    ensure!(usage(&api, &admin, "groups").await? == 0);
    mesh.shutdown().await;
    Ok(())
}

/// qemu-io over libiscsi, one command at a time: a host's initiator writing a LUN.
struct Initiator {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Initiator {
    fn connect(info: &Value) -> Result<Self> {
        let data = &info["data"];
        let field = |name: &str| -> Result<String> {
            match &data[name] {
                Value::String(text) => Ok(text.clone()),
                Value::Number(number) => Ok(number.to_string()),
                other => bail!("connection_info has no {name}: {other:?}"),
            }
        };
        let options = format!(
            "driver=iscsi,transport=tcp,portal={},target={},lun={},user={},password={},initiator-name={HOST}",
            field("target_portal")?,
            field("target_iqn")?,
            field("target_lun")?,
            field("auth_username")?,
            field("auth_password")?,
        );
        let mut child = Command::new("qemu-io")
            .args(["--image-opts", &options])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("qemu-io is required (Debian's qemu-utils and qemu-block-extra)")?;
        let stdin = child.stdin.take().context("qemu-io's stdin")?;
        let lines = BufReader::new(child.stdout.take().context("qemu-io's stdout")?).lines();
        Ok(Self { child, stdin, lines })
    }

    /// Writes the first 4 KiB of the LUN with `byte` and returns once the target acknowledged it.
    async fn write(&mut self, byte: u8) -> Result<()> {
        self.stdin.write_all(format!("write -P {byte} 0 4k\n").as_bytes()).await?;
        while let Some(line) = self.lines.next_line().await? {
            if line.contains("wrote 4096/4096") {
                return Ok(());
            }
        }
        bail!("qemu-io ended: {:?}", self.child.try_wait())
    }
}

/// The next value of the writer's counter: 1 to 255, then 1 again.
fn next(byte: u8) -> u8 {
    if byte == 255 { 1 } else { byte + 1 }
}

/// The byte a 4 KiB block is filled with; `Err` when the block is torn.
fn filled_with(path: &Path) -> Result<u8> {
    let block = read_at(path, 0, 4096)?;
    ensure!(block.iter().all(|byte| *byte == block[0]), "{} holds a torn write", path.display());
    Ok(block[0])
}

#[tokio::test(flavor = "multi_thread")]
async fn in_use_members_are_cut_at_one_point_while_a_host_keeps_writing_through_tgt() -> Result<()> {
    let tgtd = Tgtd::start()?;
    let mut mesh = InProcessMesh::start(0).await?;
    let settings = tgtd.settings();
    mesh.add_node_with("tgt-node", |config| config.export = basalt_volume_node::ExportSettings::Tgt(settings)).await?;
    let api = RestApi::start(&mesh).await?;
    let member = RestCaller::new(PROJECT, "alice");
    let node_dir = mesh.node_dir("tgt-node");
    let (group, volumes) = group_with_volumes(&api, &member, 2).await?;

    // Both volumes attached to one host through the attachments API.
    let mut initiators = Vec::new();
    for volume in &volumes {
        let body = format!(
            r#"{{"attachment": {{"volume_uuid": "{volume}", "instance_uuid": "vm-1", "connector": {{"initiator": "{HOST}", "host": "h1", "ip": "127.0.0.1", "multipath": false}}}}}}"#
        );
        let attached = member.call(&api, Method::POST, "/attachments", "3.54", Some(&body)).await?;
        ensure!(attached.status == StatusCode::OK, "{:?}", attached.body);
        let id = attached.body["attachment"]["id"].as_str().context("an attachment id")?;
        let completed = member
            .call(&api, Method::POST, &format!("/attachments/{id}/action"), "3.54", Some(r#"{"os-complete": {}}"#))
            .await?;
        ensure!(completed.status == StatusCode::NO_CONTENT, "{:?}", completed.body);
        initiators.push(Initiator::connect(&attached.body["attachment"]["connection_info"])?);
        member.wait_for(&api, &format!("/volumes/{volume}"), "volume", "in-use").await?;
    }

    // The host writes a counter to the first volume, then (once acknowledged) to the second, over
    // and over: at any point the targets held still, the first is the second or one ahead of it.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (progress, mut rounds_seen) = tokio::sync::watch::channel(0u64);
    let mut second = initiators.pop().context("two initiators")?;
    let mut first = initiators.pop().context("two initiators")?;
    let writer = tokio::spawn(async move {
        let mut counter = 1u8;
        let mut round = 0u64;
        while !*stopped.borrow_and_update() {
            first.write(counter).await?;
            second.write(counter).await?;
            round += 1;
            progress.send_replace(round);
            counter = next(counter);
        }
        anyhow::Ok(round)
    });
    let mut checked = 0;
    for _ in 0..4 {
        let before = *rounds_seen.borrow();
        rounds_seen.wait_for(|round| *round >= before + 20).await?;
        let group_snapshot = snapshot_group(&api, &member, &group).await?;
        let cut = members(&api, &member, &group_snapshot).await?;
        let snapshot_of = |volume: &str| -> Result<PathBuf> {
            let (_, snapshot) = cut.iter().find(|(known, _)| known == volume).context("a member snapshot")?;
            Ok(node_dir.join(format!("snapshot-{snapshot}")))
        };
        let (a, b) = (filled_with(&snapshot_of(&volumes[0])?)?, filled_with(&snapshot_of(&volumes[1])?)?);
        ensure!(a == b || a == next(b), "not one point in time: the first volume holds {a}, the second {b}");
        checked += 1;
    }
    stop.send_replace(true);
    let written = writer.await??;
    ensure!(written >= 80 && checked == 4, "the host kept writing through every cut ({written} rounds)");
    drop(tgtd);
    mesh.shutdown().await;
    Ok(())
}
