//! What operators see. Prometheus metrics, scraped from real processes (a gateway, a scheduler and
//! a node with a real tgtd and a backup store) while a REST client creates, attaches, backs up,
//! detaches and deletes a volume: each service's counters and gauges move with what it did, and
//! nothing a client sends becomes a label. And `basalt admin status`: services, pools with their
//! heartbeat, and the journal's operations in flight. And traces: one REST request's trace, with
//! the client's trace context, runs through every service to an OTLP collector.

use anyhow::{Context, Result, ensure};
use basalt::proto::{CreateVolumeRequest, ListOperationsRequest, VolumeStatus};
use basalt_integration::{
    BasaltProcess, ProcessMesh, Scraped, Tgtd, basalt_binary, eventually, pki, project, volume_client, wait_for_status,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
};
use reqwest::Method;
use serde_json::Value;

const PROJECT: &str = "5a1b2c3d4e5f60718293a4b5c6d7e8f9";
const INITIATOR: &str = "iqn.2004-10.org.debian:metrics-host";

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(&self, method: Method, path: &str, version: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}/{PROJECT}{path}", self.base))
            .header("X-Auth-Token", format!("admin:{PROJECT}"))
            .header("OpenStack-API-Version", format!("volume {version}"));
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let reply = request.send().await?;
        let status = reply.status().as_u16();
        Ok((status, serde_json::from_slice(&reply.bytes().await?).unwrap_or(Value::Null)))
    }

    async fn wait_for(&self, path: &str, key: &str, status: &str) -> Result<()> {
        eventually(&format!("{path} is {status}"), || async {
            let (_, shown) = self.call(Method::GET, path, "3.0", None).await?;
            ensure!(!shown[key]["status"].as_str().is_some_and(|now| now.starts_with("error")), "{path}: {shown}");
            Ok(shown[key]["status"] == status)
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_s_metrics_move_with_the_workload() -> Result<()> {
    let tgtd = Tgtd::start()?;
    let backups = tempfile::tempdir()?;
    let control = tgtd.control_port.to_string();
    let portal = tgtd.portal();
    let store = backups.path().to_str().context("utf-8 temp dir")?;
    let node_args = [
        "--export-target",
        "tgt",
        "--tgt-control-port",
        &control,
        "--iscsi-portal",
        &portal,
        "--backup-store-dir",
        store,
    ];
    let mesh = ProcessMesh::start(None, 1, 1, &node_args)?;
    mesh.wait_for_nodes(0).await?;
    let gateway = mesh.spawn_gateway(0)?;
    let scheduler = mesh.schedulers[0].as_ref().context("scheduler")?;
    let node = mesh.nodes[0].as_ref().context("node")?;
    let client = Client { http: reqwest::Client::new(), base: gateway.endpoint("rest").trim_end_matches('/').into() };

    let created_volumes = |scraped: &Scraped| {
        scraped.value(
            "basalt_rest_requests_total",
            &[("method", "POST"), ("route", "/v3/{project_id}/volumes"), ("status", "202")],
        )
    };
    let scheduler_creates = |scraped: &Scraped| {
        scraped.value(
            "basalt_grpc_server_calls_total",
            &[("service", "basalt.v1.VolumeService"), ("method", "CreateVolume"), ("code", "Ok")],
        )
    };
    let node_creates = |scraped: &Scraped| {
        scraped.value(
            "basalt_grpc_server_calls_total",
            &[("service", "basalt.v1.NodeAgent"), ("method", "CreateVolume"), ("code", "Ok")],
        )
    };
    let gateway_before = Scraped::from(&gateway).await?;
    let scheduler_before = Scraped::from(scheduler).await?;
    let node_before = Scraped::from(node).await?;

    // Create, attach through the attachments API (the node exports it through tgtd).
    let (status, created) =
        client.call(Method::POST, "/volumes", "3.0", Some(serde_json::json!({"volume": {"size": 1}}))).await?;
    ensure!(status == 202, "create: {status} {created}");
    let volume = created["volume"]["id"].as_str().context("volume id")?.to_owned();
    client.wait_for(&format!("/volumes/{volume}"), "volume", "available").await?;
    let connector = serde_json::json!({"initiator": INITIATOR, "host": "metrics-host"});
    let (status, attached) = client
        .call(
            Method::POST,
            "/attachments",
            "3.54",
            Some(serde_json::json!({"attachment": {"volume_uuid": volume, "instance_uuid": "vm-1", "connector": connector}})),
        )
        .await?;
    ensure!(status == 200, "attach: {status} {attached}");
    let attachment = attached["attachment"]["id"].as_str().context("attachment id")?.to_owned();
    let complete = Some(serde_json::json!({"os-complete": {}}));
    let (status, _) = client.call(Method::POST, &format!("/attachments/{attachment}/action"), "3.54", complete).await?;
    ensure!(status == 204, "complete: {status}");

    // The node counts the export and the host it admits; the scheduler's gauges follow the rows.
    let scraped = Scraped::from(node).await?;
    ensure!(scraped.value("basalt_node_exports", &[]) == 1.0, "one export:\n{}", scraped.text());
    ensure!(scraped.value("basalt_node_export_initiators", &[]) == 1.0, "one initiator:\n{}", scraped.text());
    eventually("the scheduler shows the attachment and the pool", || async {
        let scraped = Scraped::from(scheduler).await?;
        Ok(scraped.value("basalt_attachments", &[("attach_status", "attached")]) == 1.0
            && scraped.value("basalt_pool_capacity_gib", &[("node", "node-0")]) > 0.0
            && scraped.value("basalt_node_schedulable", &[("node", "node-0")]) == 1.0)
    })
    .await?;

    // A backup of the in-use volume, then detach and delete everything.
    let (status, backup) = client
        .call(
            Method::POST,
            "/backups",
            "3.0",
            Some(serde_json::json!({"backup": {"volume_id": volume, "force": true}})),
        )
        .await?;
    ensure!(status == 202, "backup: {status} {backup}");
    let backup = backup["backup"]["id"].as_str().context("backup id")?.to_owned();
    client.wait_for(&format!("/backups/{backup}"), "backup", "available").await?;
    let (status, _) = client.call(Method::DELETE, &format!("/attachments/{attachment}"), "3.54", None).await?;
    ensure!(status == 200, "detach: {status}");
    let scraped = Scraped::from(node).await?;
    ensure!(scraped.value("basalt_node_exports", &[]) == 0.0, "the export went with the attachment");
    ensure!(scraped.value("basalt_node_export_initiators", &[]) == 0.0, "and its initiator");
    ensure!(
        scraped.value("basalt_backup_bytes_total", &[("direction", "backup")])
            - node_before.value("basalt_backup_bytes_total", &[("direction", "backup")])
            == f64::from(1u32 << 30),
        "the backup read the 1 GiB volume:\n{}",
        scraped.text()
    );
    ensure!(
        scraped.value("basalt_backup_duration_seconds_count", &[("direction", "backup"), ("outcome", "succeeded")])
            == 1.0
    );
    client.call(Method::DELETE, &format!("/backups/{backup}"), "3.0", None).await?;
    client.call(Method::DELETE, &format!("/volumes/{volume}"), "3.0", None).await?;
    eventually("the volume is gone", || async {
        Ok(client.call(Method::GET, &format!("/volumes/{volume}"), "3.0", None).await?.0 == 404)
    })
    .await?;

    // A client's invented method and path are counted, but never named.
    let (status, _) = client.call(Method::from_bytes(b"BREW")?, "/zzz-not-a-route-9f3e", "3.0", None).await?;
    ensure!(status >= 400, "an unknown route is refused");

    let gateway_after = Scraped::from(&gateway).await?;
    let scheduler_after = Scraped::from(scheduler).await?;
    let node_after = Scraped::from(node).await?;
    ensure!(created_volumes(&gateway_after) - created_volumes(&gateway_before) == 1.0, "one REST create");
    ensure!(
        gateway_after
            .value("basalt_rest_request_duration_seconds_count", &[("route", "/v3/{project_id}/volumes/{volume_id}")])
            > 0.0,
        "the polls are timed under their route template"
    );
    ensure!(gateway_after.value("basalt_rest_requests_total", &[("method", "other"), ("route", "unmatched")]) == 1.0);
    ensure!(!gateway_after.text().contains("zzz-not-a-route") && !gateway_after.text().contains("BREW"));
    ensure!(scheduler_creates(&scheduler_after) - scheduler_creates(&scheduler_before) == 1.0, "one gRPC create");
    for kind in ["create_volume", "delete_volume"] {
        ensure!(
            scheduler_after.value("basalt_operations_total", &[("kind", kind), ("outcome", "succeeded")]) == 1.0,
            "one {kind} operation:\n{}",
            scheduler_after.text()
        );
    }
    ensure!(node_creates(&node_after) - node_creates(&node_before) == 1.0, "one node create");
    ensure!(
        node_after.value("basalt_grpc_server_calls_total", &[("method", "ExportVolume"), ("code", "Ok")]) >= 1.0,
        "the export is a node call"
    );
    eventually("the journal is empty", || async {
        let scraped = Scraped::from(scheduler).await?;
        Ok(scraped.text().contains("\nbasalt_journal_depth 0\n")
            && scraped.value("basalt_journal_oldest_operation_age_seconds", &[]) == 0.0)
    })
    .await?;
    Ok(())
}

/// `basalt admin status` against a scheduler: an operation whose node is frozen (SIGSTOP) shows
/// in the journal with its kind and resource, and leaves it once the node answers again.
#[tokio::test(flavor = "multi_thread")]
async fn basalt_admin_status_shows_services_pools_and_the_journal() -> Result<()> {
    // A long report interval keeps the frozen node schedulable for the test's length.
    let mesh = ProcessMesh::start(None, 1, 1, &["--report-interval-ms", "5000"])?;
    mesh.wait_for_nodes(0).await?;
    let endpoint = mesh.scheduler_addr(0);
    let status = || -> Result<String> {
        let output = std::process::Command::new(basalt_binary()?)
            .args(["admin", "status", "--scheduler-endpoint", &endpoint])
            .args(pki().args(&basalt::tls::Role::Csi))
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        ensure!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
        Ok(text)
    };
    let shown = status()?;
    for expected in ["basalt-scheduler", "basalt-volume", "node-0@file#default", "HEARTBEAT", "journal: 0 operations"] {
        ensure!(shown.contains(expected), "{expected:?} missing from:\n{shown}");
    }

    let mut client = volume_client(&endpoint).await?;
    let member = project("status");
    let refused = client.list_operations(member.request(ListOperationsRequest::default())).await;
    ensure!(refused.is_err_and(|status| status.code() == tonic::Code::PermissionDenied), "the journal is for admins");

    let node_pid = mesh.nodes[0].as_ref().context("node")?.pid().to_string();
    let signal = |name: &str| std::process::Command::new("kill").args([name, &node_pid]).status();
    ensure!(signal("-STOP")?.success());
    let volume = client
        .create_volume(member.request(CreateVolumeRequest { size_gib: 1, ..Default::default() }))
        .await?
        .into_inner();
    let shown = status();
    ensure!(signal("-CONT")?.success());
    let shown = shown?;
    ensure!(shown.contains("journal: 1 operations in flight"), "{shown}");
    let line =
        shown.lines().find(|line| line.contains(&volume.id)).context(format!("no line for the volume:\n{shown}"))?;
    ensure!(line.contains("create_volume") && line.contains("scheduler-0/"), "{line}");

    wait_for_status(&mut client, &member, &volume.id, VolumeStatus::Available).await?;
    ensure!(status()?.contains("journal: 0 operations in flight"));
    Ok(())
}

/// An OTLP collector that keeps what it is sent: (service name, trace id in hex, span name).
#[derive(Clone, Default)]
struct Collector(std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref()?.value.clone())
                .map(|value| match value {
                    any_value::Value::StringValue(name) => name,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                let trace_id: String = span.trace_id.iter().map(|byte| format!("{byte:02x}")).collect();
                kept.push((service.clone(), trace_id, span.name));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> Result<(Self, std::net::SocketAddr)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let collector = Self::default();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        Ok((collector, addr))
    }

    fn spans_of(&self, trace_id: &str) -> Vec<(String, String)> {
        let kept = self.0.lock().unwrap();
        kept.iter()
            .filter(|(_, trace, _)| trace == trace_id)
            .map(|(service, _, name)| (service.clone(), name.clone()))
            .collect()
    }
}

/// A REST create that carries a client's `traceparent` leaves spans of that one trace in the
/// gateway (the request), the scheduler (its gRPC call and the create operation) and the node
/// (its gRPC call), each exported over OTLP as its own service.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_s_trace_runs_from_the_gateway_through_the_scheduler_to_the_node() -> Result<()> {
    let (collector, addr) = Collector::start().await?;
    let endpoint = format!("http://{addr}");
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let mesh = ProcessMesh::start_with_env(None, 1, &[&[]], &env)?;
    mesh.wait_for_nodes(0).await?;
    let gateway = mesh.spawn_gateway(0)?;
    let client = Client { http: reqwest::Client::new(), base: gateway.endpoint("rest").trim_end_matches('/').into() };

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reply = client
        .http
        .post(format!("{}/{PROJECT}/volumes", client.base))
        .header("X-Auth-Token", format!("admin:{PROJECT}"))
        .header("Content-Type", "application/json")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(r#"{"volume": {"size": 1}}"#)
        .send()
        .await?;
    ensure!(reply.status().as_u16() == 202, "create: {}", reply.status());
    let created: Value = serde_json::from_slice(&reply.bytes().await?)?;
    let volume = created["volume"]["id"].as_str().context("volume id")?;
    client.wait_for(&format!("/volumes/{volume}"), "volume", "available").await?;

    let expected = [
        ("basalt-gateway", "rest request"),
        ("basalt-scheduler", "basalt.v1.VolumeService/CreateVolume"),
        ("basalt-scheduler", "create_volume"),
        ("basalt-volume-node", "basalt.v1.NodeAgent/CreateVolume"),
    ];
    eventually("every hop's span reaches the collector in the client's trace", || async {
        let spans = collector.spans_of(trace_id);
        Ok(expected.iter().all(|(service, name)| spans.iter().any(|span| span.0 == *service && span.1 == *name)))
    })
    .await
    .with_context(|| format!("spans of the trace: {:?}", collector.spans_of(trace_id)))?;
    Ok(())
}

/// A log that goes to a file or journald (stderr not a terminal) is plain text: no colour codes
/// for an operator's grep or a log shipper to trip over.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_written_to_a_file_carries_no_terminal_codes() -> Result<()> {
    let data = tempfile::tempdir()?;
    let log_path = data.path().join("basalt.log");
    let mut up =
        BasaltProcess::up_logging(&data.path().join("up"), &[], &[], std::fs::File::create(&log_path)?.into())?;
    let listed = reqwest::Client::new()
        .get(format!("{}/{PROJECT}/volumes", up.endpoint("rest")))
        .header("X-Auth-Token", format!("member:{PROJECT}"))
        .send()
        .await?;
    ensure!(listed.status().is_success(), "{}", listed.status());
    ensure!(up.terminate()?, "basalt up stops cleanly");
    let log = std::fs::read_to_string(&log_path)?;
    ensure!(log.contains(" INFO "), "the log has its lines:\n{log}");
    ensure!(!log.contains('\u{1b}'), "terminal escape codes in a log file:\n{log}");
    Ok(())
}
