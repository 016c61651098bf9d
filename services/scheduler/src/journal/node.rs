//! Calls to a volume node on an operation's behalf: retried while the node is unreachable, since
//! every node call is idempotent.

use std::time::Duration;

use basalt::{ErrorCode, ServiceError, proto::node_agent_client::NodeAgentClient};
use tonic::transport::Channel;

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

/// Whether a failed node call may succeed on a retry: the node was unreachable, or the connection
/// broke mid-call (a transport error, which tonic reports as UNKNOWN with its cause attached).
fn is_retryable(status: &tonic::Status) -> bool {
    use std::error::Error;
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => true,
        tonic::Code::Unknown => status.source().is_some(),
        _ => false,
    }
}
