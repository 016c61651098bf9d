//! Calls to a volume node on an operation's behalf: retried while the node is unreachable, since
//! every node call is idempotent.

use std::time::Duration;

use basalt::channel::Channel;
use basalt::{
    ErrorCode, ServiceError,
    ids::{SnapshotId, VolumeId},
    proto::{NodeDeleteVolumeRequest, NodeSnapshotRequest, node_agent_client::NodeAgentClient},
};

use crate::Core;

const NODE_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Calls the node, retrying while it is unreachable; other errors are final.
pub async fn with_node<T, F, Fut>(core: &Core, node_id: &str, call: F) -> Result<T, ServiceError>
where
    F: Fn(NodeAgentClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + core.config.node_retry_window;
    loop {
        let attempt = match core.nodes.client(&core.capacity, node_id) {
            Ok(client) => call(client).await.map_err(|status| {
                let retryable = is_retryable(&status);
                (ServiceError::from(status), retryable)
            }),
            Err(error) => {
                let retryable = matches!(error.code, ErrorCode::Unavailable | ErrorCode::Timeout);
                Err((error, retryable))
            }
        };
        match attempt {
            Ok(value) => return Ok(value),
            Err((error, true)) => {
                // Only an unreachable node can be a lost one (it is declared lost once silent):
                // asked here, the lookup stays off the path of every call that gets through.
                if crate::lost_nodes::is_lost(&core.db, node_id).await? {
                    return Err(crate::lost_nodes::lost_error(node_id));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ServiceError::unavailable(format!(
                        "volume node {node_id} stayed unreachable for {}s: {error}",
                        core.config.node_retry_window.as_secs()
                    )));
                }
                tokio::time::sleep(NODE_RETRY_PAUSE).await;
            }
            Err((error, false)) => return Err(error),
        }
    }
}

/// Wipes and removes a volume on its node; nothing is left to do on a node declared lost, whose
/// storage went with it.
pub async fn delete_volume_on(core: &Core, node_id: &str, volume_id: VolumeId, pool: &str) -> Result<(), ServiceError> {
    if crate::lost_nodes::is_lost(&core.db, node_id).await? {
        tracing::warn!(%volume_id, node_id, "the volume's node was declared lost: its storage is gone");
        return Ok(());
    }
    let request = NodeDeleteVolumeRequest { volume_id: volume_id.to_string(), pool: pool.to_owned() };
    with_node(core, node_id, |mut client| {
        let request = request.clone();
        async move { client.delete_volume(request).await.map(drop) }
    })
    .await
}

/// Wipes and removes a snapshot on its node, as [`delete_volume_on`] does a volume.
pub async fn delete_snapshot_on(
    core: &Core,
    node_id: &str,
    snapshot_id: SnapshotId,
    pool: &str,
) -> Result<(), ServiceError> {
    if crate::lost_nodes::is_lost(&core.db, node_id).await? {
        tracing::warn!(%snapshot_id, node_id, "the snapshot's node was declared lost: its storage is gone");
        return Ok(());
    }
    let request =
        NodeSnapshotRequest { snapshot_id: snapshot_id.to_string(), volume_id: String::new(), pool: pool.to_owned() };
    with_node(core, node_id, |mut client| {
        let request = request.clone();
        async move { client.delete_snapshot(request).await.map(drop) }
    })
    .await
}

/// Whether a failed node call may succeed on a retry: the node was unreachable, or the connection
/// broke mid-call.
fn is_retryable(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => true,
        _ => basalt::error::broke_during_the_call(status),
    }
}
