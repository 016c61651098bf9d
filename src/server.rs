//! Server set-up shared by every service: gRPC servers that also serve `grpc.health.v1` and server
//! reflection (so `grpcurl` and load balancers work against any Basalt process), the REST
//! gateway's HTTP/1 server, and the background tasks of a service. Every server accepts through a
//! [`BoundedListener`], so none holds more connections, or holds them longer, than its limits.

use std::{convert::Infallible, future::Future, net::SocketAddr, pin::pin};

use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::watch,
    task::JoinHandle,
};
use tonic::{
    body::Body,
    server::NamedService,
    service::Routes,
    transport::{Server, ServerTlsConfig, server::Connected},
};
use tonic_health::ServingStatus;
use tower::ServiceExt;

use crate::{
    ServiceError,
    listener::{BoundedListener, ListenerLimits, Protocol},
    metrics::GrpcMetricsLayer,
    telemetry::TraceContextLayer,
    tls::MeshTls,
};

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
const LISTEN_BACKLOG: u32 = 4096;
/// How often a unix-socket server pings a quiet peer.
const LOCAL_PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);

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

    /// Serves over the mesh's mutual TLS until `shutdown` resolves, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: BoundedListener,
        tls: &MeshTls,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServiceError> {
        // The server pings a quiet peer well within the idle timeout: a live client answers and stays
        // connected through long calls, a dead or silent one is closed by the listener. A handshake
        // gets as long as a request head.
        let limits = listener.limits();
        let ping_every = limits.idle_timeout / 3;
        let tls = tls.server_config(limits.header_timeout);
        self.serve_stream(listener.into_incoming(), Some(tls), ping_every, shutdown).await
    }

    /// Serves the connections of a unix socket (the CSI plugin's, which only the local
    /// orchestrator reaches) until `shutdown` resolves.
    pub async fn serve_incoming<IO, E>(
        self,
        incoming: impl futures::Stream<Item = Result<IO, E>> + Send,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServiceError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.serve_stream(incoming, None, LOCAL_PING_INTERVAL, shutdown).await
    }

    async fn serve_stream<IO, E>(
        self,
        incoming: impl futures::Stream<Item = Result<IO, E>> + Send,
        tls: Option<ServerTlsConfig>,
        ping_every: std::time::Duration,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServiceError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        for name in &self.names {
            health_reporter.set_service_status(*name, ServingStatus::Serving).await;
        }
        // Both reflection versions: grpcurl and grpcio-reflection still ask v1alpha.
        // Only the services this process serves are listed, though every Basalt and CSI type
        // resolves.
        let reflection = || {
            let builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(crate::csi::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(HEALTH_SERVICE);
            self.names.iter().fold(builder, |builder, name| builder.with_service_name(*name))
        };
        let reflection_error = |error| ServiceError::internal(format!("cannot build the reflection service: {error}"));
        let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
        let routes = self.routes.add_service(health_service).add_service(reflection_v1).add_service(reflection_v1alpha);
        let served: Vec<&'static str> =
            self.names.iter().copied().chain([HEALTH_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA]).collect();
        let mut server = Server::builder().layer(GrpcMetricsLayer::new(&served)).layer(TraceContextLayer);
        if let Some(tls) = tls {
            server = server
                .tls_config(tls)
                .map_err(|error| ServiceError::invalid(format!("cannot serve with the mesh certificate: {error}")))?;
        }
        server
            .http2_keepalive_interval(Some(ping_every))
            .http2_keepalive_timeout(Some(ping_every))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|error| ServiceError::internal(format!("grpc server failed: {error}")))
    }
}

impl GrpcServices {
    /// Serves in the background until `tasks` is shut down.
    pub fn spawn(self, listener: BoundedListener, tls: &MeshTls, tasks: &mut Tasks, what: &'static str) {
        let stopped = tasks.stopped();
        let tls = tls.clone();
        tasks.spawn(async move {
            if let Err(error) = self.serve(listener, &tls, stopped).await {
                tracing::error!(%error, "{what} stopped");
            }
        });
    }
}

/// Binds `addr` (port 0 picks a free port) and returns the listener with its real address.
pub async fn bind(
    addr: SocketAddr,
    limits: ListenerLimits,
    protocol: Protocol,
    what: &'static str,
) -> Result<(BoundedListener, SocketAddr), ServiceError> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // A deep backlog: a burst of clients waits to be accepted instead of having its handshakes
        // dropped (the kernel caps it at net.core.somaxconn).
        socket.listen(LISTEN_BACKLOG)
    };
    let listener = listen().map_err(|error| ServiceError::unavailable(format!("cannot listen on {addr}: {error}")))?;
    let bound = listener
        .local_addr()
        .map_err(|error| ServiceError::internal(format!("cannot read the bound address: {error}")))?;
    Ok((BoundedListener::new(listener, limits, protocol, what), bound))
}

/// Serves `app` over HTTP/1.1 with keep-alive until `shutdown` resolves, then lets the requests in
/// flight finish. The listener's watchdog bounds how long a connection may idle or dawdle over a
/// request head.
pub async fn serve_http1(listener: BoundedListener, app: axum::Router, shutdown: impl Future<Output = ()> + Send) {
    let (stop, stopping) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let connection = tokio::select! {
            connection = listener.accept() => connection,
            () = &mut shutdown => break,
        };
        // Reap finished connection tasks as we go, so the set stays as large as the live ones.
        while connections.try_join_next().is_some() {}
        let activity = connection.activity();
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let in_flight = activity.request();
            let response = app.clone().oneshot(request.map(axum::body::Body::new));
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        });
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            // The listener's watchdog times request heads out, for REST and gRPC alike.
            builder.keep_alive(true).header_read_timeout(None);
            let mut served = pin!(builder.serve_connection(TokioIo::new(connection), service));
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "rest connection ended");
                    }
                    return;
                }
                _ = stopping.wait_for(|stop| *stop) => served.as_mut().graceful_shutdown(),
            }
            if let Err(error) = served.await {
                tracing::debug!(%error, "rest connection ended during shutdown");
            }
        });
    }
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// Runs `pass` at once and then every `period` until `stopped` resolves: a pass that overruns
/// delays the next instead of bunching them, and a pass under way finishes before the loop ends.
pub async fn every<Pass: Future<Output = ()>>(
    period: std::time::Duration,
    stopped: impl Future<Output = ()>,
    mut pass: impl FnMut() -> Pass,
) {
    let mut stopped = pin!(stopped);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => pass().await,
            () = &mut stopped => return,
        }
    }
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
