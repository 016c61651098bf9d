//! gRPC client channels with deadlines: every command in the mesh is a call that cannot hang.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::ServiceError;

/// How long to wait for a TCP + HTTP/2 connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The default deadline of one call; long node operations pass their own.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A lazily connecting channel to `endpoint` (`http://host:port`, or `host:port`).
pub fn channel(endpoint: &str) -> Result<Channel, ServiceError> {
    channel_with_timeout(endpoint, CALL_TIMEOUT)
}

pub fn channel_with_timeout(endpoint: &str, call_timeout: Duration) -> Result<Channel, ServiceError> {
    let uri = if endpoint.contains("://") { endpoint.to_owned() } else { format!("http://{endpoint}") };
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|error| ServiceError::invalid(format!("invalid grpc endpoint {uri:?}: {error}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(call_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(endpoint.connect_lazy())
}
