//! Hostile clients against `basalt up` over real sockets: a flood of idle and half-sent
//! connections must neither starve real clients nor outlive the configured timeouts, and requests
//! hyper refuses before they reach the router still answer with Cinder faults.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::body::Body;
use basalt_integration::*;
use http_body_util::BodyExt;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

const FLOOD: usize = 2000;
const IDLE_TIMEOUT_MS: u64 = 4000;
const HEADER_TIMEOUT_MS: u64 = 2000;
const BODY_TIMEOUT_MS: u64 = 2000;
const HOST: &str = "iqn.2024-01.org.basalt.test:flood-host";

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// `basalt up` with short connection timeouts, exporting through a private tgtd.
fn start_up(tgtd: &Tgtd, data: &std::path::Path) -> Result<BasaltProcess> {
    let (idle, header, body) =
        (IDLE_TIMEOUT_MS.to_string(), HEADER_TIMEOUT_MS.to_string(), BODY_TIMEOUT_MS.to_string());
    let export = tgtd.export_flags();
    let mut flags: Vec<&str> = export.iter().map(String::as_str).collect();
    flags.extend(["--max-capacity-gib", "100", "--idle-timeout-ms", &idle]);
    flags.extend(["--header-timeout-ms", &header, "--body-timeout-ms", &body]);
    BasaltProcess::up(data, &flags, &[])
}

/// A Cinder client's session: one kept-alive connection pool, `admin:<project>` tokens.
struct Session {
    http: HttpClient,
    base: String,
    token: String,
}

impl Session {
    fn new(rest: &str) -> Self {
        let project = project_id("flood");
        Self {
            http: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("{rest}/{project}"),
            token: format!("admin:{project}"),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<(u16, Value)> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("x-auth-token", &self.token)
            .header("openstack-api-version", "volume 3.44")
            .header("content-type", "application/json")
            .body(body.map(Body::from).unwrap_or_else(Body::empty))?;
        let response = self.http.request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        Ok((status, body))
    }

    async fn wait_for(&self, volume: &str, status: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, shown) = self.call("GET", &format!("/volumes/{volume}"), None).await?;
            if status == "gone" && code == 404 {
                return Ok(());
            }
            if shown["volume"]["status"] == status {
                return Ok(());
            }
            ensure!(shown["volume"]["status"] != "error", "volume {volume} went to error: {shown}");
            ensure!(Instant::now() < deadline, "volume {volume} is not {status}: {shown}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Create, attach to a host through the export, complete, detach and delete one volume.
    async fn volume_lifecycle(&self) -> Result<()> {
        let (code, created) = self.call("POST", "/volumes", Some(r#"{"volume": {"size": 1}}"#.into())).await?;
        ensure!(code == 202, "create answered {code}: {created}");
        let volume = created["volume"]["id"].as_str().context("a volume id")?.to_owned();
        self.wait_for(&volume, "available").await?;
        let body = format!(
            r#"{{"attachment": {{"volume_uuid": "{volume}", "instance_uuid": "vm-1", "connector": {{"initiator": "{HOST}", "host": "h1", "ip": "127.0.0.1"}}}}}}"#
        );
        let (code, attached) = self.call("POST", "/attachments", Some(body)).await?;
        ensure!(code == 200, "attach answered {code}: {attached}");
        ensure!(attached["attachment"]["connection_info"]["driver_volume_type"] == "iscsi", "{attached}");
        let attachment = attached["attachment"]["id"].as_str().context("an attachment id")?.to_owned();
        let (code, _) = self
            .call("POST", &format!("/attachments/{attachment}/action"), Some(r#"{"os-complete": {}}"#.into()))
            .await?;
        ensure!(code == 204, "os-complete answered {code}");
        self.wait_for(&volume, "in-use").await?;
        let (code, _) = self.call("DELETE", &format!("/attachments/{attachment}"), None).await?;
        ensure!(code == 200, "detach answered {code}");
        self.wait_for(&volume, "available").await?;
        let (code, _) = self.call("DELETE", &format!("/volumes/{volume}"), None).await?;
        ensure!(code == 202, "delete answered {code}");
        self.wait_for(&volume, "gone").await
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("a number")?.parse()?)
}

/// How a flooding socket misbehaves.
#[derive(Debug, Clone, Copy)]
enum Stall {
    Silent,
    PartialRequestLine,
    HeadersWithoutEnd,
    ShortBody,
}

async fn open_stalled(addr: &str, stall: Stall, token: &str, project: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let sent = match stall {
        Stall::Silent => String::new(),
        Stall::PartialRequestLine => "GET /v3/volu".into(),
        Stall::HeadersWithoutEnd => {
            format!("GET /v3/{project}/volumes HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n")
        }
        Stall::ShortBody => format!(
            "POST /v3/{project}/volumes HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"volume\":"
        ),
    };
    stream.write_all(sent.as_bytes()).await?;
    Ok(stream)
}

/// Waits until the server closes `stream` (EOF or reset), reading whatever it answers first.
async fn closed_by_server(mut stream: TcpStream, what: String) -> Result<Instant> {
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buffer)).await {
            Err(_) => bail!("the server kept a stalled connection ({what}) open for {WAIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(Instant::now()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_stalled_connections_starves_nobody_and_is_closed_in_time() -> Result<()> {
    let tgtd = Tgtd::start()?;
    let data = tempfile::tempdir()?;
    let up = start_up(&tgtd, data.path())?;
    let rest = up.endpoint("rest").to_owned();
    let rest_addr = rest.trim_start_matches("http://").trim_end_matches("/v3").to_owned();
    let grpc_addr = up.endpoint("grpc").trim_start_matches("https://").to_owned();
    let session = Session::new(&rest);
    session.volume_lifecycle().await?;
    let before = rss_kib(up.pid())?;

    // 2,000 stalled REST connections of four kinds, and 200 silent ones on the gRPC listener.
    let project = project_id("flood");
    let token = format!("admin:{project}");
    let stalls = [Stall::Silent, Stall::PartialRequestLine, Stall::HeadersWithoutEnd, Stall::ShortBody];
    let flood_started = Instant::now();
    let mut opening = Vec::new();
    for index in 0..FLOOD {
        let (addr, token, project) = (rest_addr.clone(), token.clone(), project.clone());
        let stall = stalls[index % stalls.len()];
        let what = format!("rest, {stall:?}");
        opening.push(tokio::spawn(async move {
            Ok::<_, anyhow::Error>((open_stalled(&addr, stall, &token, &project).await?, what))
        }));
    }
    for _ in 0..200 {
        let addr = grpc_addr.clone();
        opening.push(tokio::spawn(async move {
            Ok((open_stalled(&addr, Stall::Silent, "", "").await?, "grpc, Silent".to_owned()))
        }));
    }
    let mut held = Vec::new();
    for opened in opening {
        held.push(opened.await??);
    }

    // While they are held, a real client creates, attaches, detaches and deletes volumes.
    session.volume_lifecycle().await?;
    session.volume_lifecycle().await?;

    // The server closes every one of them, within the idle timeout (the longest of the three)
    // plus a margin for a loaded machine; none is left to the client to give up on.
    let closing: Vec<_> = held.into_iter().map(|(stream, what)| tokio::spawn(closed_by_server(stream, what))).collect();
    let mut last_closed = flood_started;
    for closed in closing {
        last_closed = last_closed.max(closed.await??);
    }
    let took = last_closed - flood_started;
    ensure!(took < Duration::from_millis(IDLE_TIMEOUT_MS) + WAIT, "the last stalled connection closed after {took:?}");

    // Nothing leaked: the process's memory is back near where it was.
    session.volume_lifecycle().await?;
    let after = rss_kib(up.pid())?;
    ensure!(after <= 2 * before, "RSS grew from {before} KiB to {after} KiB after the flood");
    println!("flood of {FLOOD} + 200: closed within {took:?}; RSS {before} KiB before, {after} KiB after");
    Ok(())
}

/// Sends raw bytes and returns the status and the body of the answer.
async fn raw_exchange(addr: &str, request: &[u8]) -> Result<(u16, Value)> {
    let mut stream = TcpStream::connect(addr).await?;
    // The server may answer and close before it has read everything: a write error is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("no response head in {text:?}"))?;
    let status = head.split_whitespace().nth(1).context("a status")?.parse()?;
    Ok((status, serde_json::from_str(body).with_context(|| format!("a JSON body in {text:?}"))?))
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_refused_before_routing_still_get_cinder_faults() -> Result<()> {
    let tgtd = Tgtd::start()?;
    let data = tempfile::tempdir()?;
    let up = start_up(&tgtd, data.path())?;
    let addr = up.endpoint("rest").trim_start_matches("http://").trim_end_matches("/v3").to_owned();
    let project = project_id("faults");

    // A URL past hyper's own limit (64 KiB) and one past ours (16 KiB).
    for length in [70_000, 20_000] {
        let request = format!("GET /v3/{project}/volumes?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(length));
        let (status, body) = raw_exchange(&addr, request.as_bytes()).await?;
        ensure!(status == 414 && body["computeFault"]["code"] == 414, "{length}: {status} {body}");
    }
    // Too many headers.
    let many: String = (0..150).map(|index| format!("X-H{index}: v\r\n")).collect();
    let (status, body) = raw_exchange(&addr, format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await?;
    ensure!(status == 431 && body["computeFault"]["code"] == 431, "{status} {body}");
    // Not HTTP at all.
    let (status, body) = raw_exchange(&addr, b"\x16\x03\x01 hello\r\n\r\n").await?;
    ensure!(status == 400 && body["badRequest"]["code"] == 400, "{status} {body}");
    // A body that never arrives in full: 408 with a fault, then the connection closes.
    let short = format!(
        "POST /v3/{project}/volumes HTTP/1.1\r\nHost: x\r\nX-Auth-Token: admin:{project}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"volume\":"
    );
    let (status, body) = raw_exchange(&addr, short.as_bytes()).await?;
    ensure!(
        status == 408 && body["computeFault"]["message"].as_str().is_some_and(|m| m.contains("did not arrive")),
        "{status} {body}"
    );
    Ok(())
}
