//! gRPC server set-up shared by every service: each one also serves `grpc.health.v1` and server
//! reflection, so `grpcurl` and load balancers work against any Basalt process.

use std::{convert::Infallible, future::Future, net::SocketAddr};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{body::Body, server::NamedService, service::Routes, transport::Server};
use tonic_health::ServingStatus;

use crate::ServiceError;

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

pub struct GrpcServices {
    routes: Routes,
    names: Vec<&'static str>,
}

impl Default for GrpcServices {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServices {
    pub fn new() -> Self {
        Self { routes: Routes::default(), names: Vec::new() }
    }

    pub fn with_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible> + NamedService + Clone + Send + Sync + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServiceError> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        for name in &self.names {
            health_reporter.set_service_status(*name, ServingStatus::Serving).await;
        }
        // Both reflection versions: grpcurl and grpcio-reflection still ask v1alpha.
        // Only the services this process serves are listed, though every Basalt type resolves.
        let reflection = || {
            let builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(HEALTH_SERVICE);
            self.names.iter().fold(builder, |builder, name| builder.with_service_name(*name))
        };
        let reflection_error = |error| ServiceError::internal(format!("cannot build the reflection service: {error}"));
        let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
        let routes = self.routes.add_service(health_service).add_service(reflection_v1).add_service(reflection_v1alpha);
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
            .map_err(|error| ServiceError::internal(format!("grpc server failed: {error}")))
    }
}

impl GrpcServices {
    /// Serves in the background until `tasks` is shut down.
    pub fn spawn(self, listener: TcpListener, tasks: &mut Tasks, what: &'static str) {
        let stopped = tasks.stopped();
        tasks.spawn(async move {
            if let Err(error) = self.serve(listener, stopped).await {
                tracing::error!(%error, "{what} stopped");
            }
        });
    }
}

/// Binds `addr` (port 0 picks a free port) and returns the listener with its real address.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServiceError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| ServiceError::unavailable(format!("cannot listen on {addr}: {error}")))?;
    let bound = listener
        .local_addr()
        .map_err(|error| ServiceError::internal(format!("cannot read the bound address: {error}")))?;
    Ok((listener, bound))
}

/// The background tasks of a started service and the one signal that stops them all.
pub struct Tasks {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self { stop: watch::channel(false).0, handles: Vec::new() }
    }

    /// Resolves once [`Tasks::shutdown`] is called; give one to each loop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.stop.subscribe();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }

    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.handles.push(tokio::spawn(task));
    }

    /// Signals every task to stop and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}
