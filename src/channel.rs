//! gRPC client channels with deadlines, over the mesh's mutual TLS: every command in the mesh is
//! a call that cannot hang, to a peer that proved who it is.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use tonic::{body::Body, transport::Endpoint};

use crate::{
    ServiceError,
    tls::{MeshTls, Role},
};

/// A channel to a peer of the mesh: tonic's, with the caller's trace context in every request.
#[derive(Debug, Clone)]
pub struct Channel(tonic::transport::Channel);

/// A channel built by other means (a test's deliberately unauthenticated peer).
impl From<tonic::transport::Channel> for Channel {
    fn from(channel: tonic::transport::Channel) -> Self {
        Self(channel)
    }
}

impl tower::Service<http::Request<Body>> for Channel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <tonic::transport::Channel as tower::Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.0, context)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        crate::telemetry::inject_context(request.headers_mut());
        self.0.call(request)
    }
}

/// How long to wait for a TCP + TLS + HTTP/2 connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The default deadline of one call; long node operations pass their own.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A lazily connecting channel to `server` at `endpoint` (`https://host:port`, or `host:port`),
/// presenting `tls`'s certificate and accepting only a certificate that names `server`.
pub fn channel(endpoint: &str, tls: &MeshTls, server: &Role) -> Result<Channel, ServiceError> {
    channel_with_timeout(endpoint, tls, server, CALL_TIMEOUT)
}

pub fn channel_with_timeout(
    endpoint: &str,
    tls: &MeshTls,
    server: &Role,
    call_timeout: Duration,
) -> Result<Channel, ServiceError> {
    let address = match endpoint.split_once("://") {
        None => endpoint,
        Some(("https", address)) => address,
        Some(_) => {
            return Err(ServiceError::invalid(format!(
                "invalid grpc endpoint {endpoint:?} for {server}: the mesh speaks TLS only, give https://host:port or host:port"
            )));
        }
    };
    let uri = format!("https://{address}");
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|error| ServiceError::invalid(format!("invalid grpc endpoint {uri:?}: {error}")))?
        .tls_config(tls.client_config(server))
        .map_err(|error| ServiceError::invalid(format!("cannot use the mesh certificate for {uri}: {error}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(call_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(Channel(endpoint.connect_lazy()))
}
