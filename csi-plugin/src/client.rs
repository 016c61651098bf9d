//! A client of a CSI socket, for operators' checks and tests: a gRPC channel over the unix socket.

use std::path::Path;

use basalt::ServiceError;
pub use tonic::transport::Channel;
use tonic::transport::Endpoint;

/// Connects to the plugin listening at `endpoint` (`unix:///path` or a path).
pub async fn connect(endpoint: &str) -> Result<Channel, ServiceError> {
    let socket = crate::socket_path(endpoint)?;
    connect_path(&socket).await
}

pub async fn connect_path(socket: &Path) -> Result<Channel, ServiceError> {
    let socket = socket.to_path_buf();
    // The URI is a placeholder: the connector dials the unix socket.
    Endpoint::from_static("http://csi.invalid")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|error| ServiceError::unavailable(format!("cannot reach the CSI socket: {error}")))
}
