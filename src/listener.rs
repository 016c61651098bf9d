//! Listeners with bounded resources, for every server Basalt runs (REST and gRPC alike): a cap on
//! open connections that stops accepting when reached (the kernel's backlog holds the rest), and a
//! watchdog on each connection that closes it when its peer stalls:
//!
//! - HTTP/1 (REST): a connection waiting for a request closes after the idle timeout; once a
//!   request's first bytes arrive, its head must be complete within the header timeout (the body
//!   has its own timeout where it is read). A request inside the service is never cut.
//! - gRPC (HTTP/2): the connection closes after the idle timeout without a byte from the peer. The
//!   server pings an idle peer well within that time, so a live client always answers in time, and
//!   a half-sent preface or a silent socket does not.
//!
//! The process raises its descriptor limit at start and splits what it can use among its
//! listeners, keeping a reserve for the database, the bus, storage and outgoing calls, so a flood of
//! connections on one listener cannot starve the rest of the process.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

use crate::error::cinder_fault_for_status;

/// How long and how many: the bounds of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Open connections at most; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// From a request's first byte to the end of its head (HTTP/1).
    pub header_timeout: Duration,
    /// For a request body to arrive in full, once the service reads it.
    pub body_timeout: Duration,
    /// A connection with nothing to do: no request in it and nothing from the peer.
    pub idle_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Descriptors kept for everything but listeners: a quarter of the limit, and at least this many.
const MIN_DESCRIPTOR_RESERVE: u64 = 256;
/// What the process asks for when the hard limit allows it (root may raise the hard limit too).
const WANTED_DESCRIPTORS: u64 = 65_536;

impl ListenerLimits {
    /// These limits with the connection cap cut to this listener's share of `descriptors` (the
    /// process's limit) among `listeners`, after the reserve.
    pub fn within_descriptor_budget(self, descriptors: u64, listeners: usize) -> Self {
        let reserve = (descriptors / 4).max(MIN_DESCRIPTOR_RESERVE);
        let share = descriptors.saturating_sub(reserve) / listeners.max(1) as u64;
        Self { max_connections: self.max_connections.min(share.max(1) as usize), ..self }
    }
}

/// Raises the soft limit on open descriptors to the hard limit (and both to 65,536 when the
/// process may), and returns the limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let wanted = limit.rlim_max.max(WANTED_DESCRIPTORS);
    for (soft, hard) in [(wanted, wanted), (limit.rlim_max, limit.rlim_max)] {
        let raised = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        // SAFETY: setrlimit reads the struct we pass; a refusal leaves the limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return soft;
        }
    }
    limit.rlim_cur
}

/// What a connection carries, which decides how its watchdog reads silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// REST: requests one after another; the server marks where each begins and ends.
    Http1,
    /// gRPC: multiplexed streams; the server pings idle peers.
    Grpc,
}

/// A TCP listener that accepts at most `max_connections` at a time.
pub struct BoundedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    occupancy: Arc<Occupancy>,
    limits: ListenerLimits,
    protocol: Protocol,
    what: &'static str,
}

/// Open connections, and the most open since memory was last handed back.
#[derive(Debug, Default)]
struct Occupancy {
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// A flood smaller than this leaves too little behind to be worth a trim.
const TRIM_AFTER_PEAK: usize = 256;

impl Occupancy {
    fn opened(&self) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(open, Ordering::Relaxed);
    }

    /// Once a flood has drained to a quarter of its peak, hands the memory its connections used
    /// back to the system: the allocator keeps freed pages otherwise, and a process that met one
    /// flood would hold its peak memory for good.
    fn closed(&self) {
        let open = self.open.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        let peak = self.peak.load(Ordering::Relaxed);
        if peak < TRIM_AFTER_PEAK || open > peak / 4 {
            return;
        }
        if self.peak.compare_exchange(peak, open, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            release_free_memory();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the kernel.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

impl BoundedListener {
    pub fn new(listener: TcpListener, limits: ListenerLimits, protocol: Protocol, what: &'static str) -> Self {
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        Self { listener, permits, occupancy: Arc::default(), limits, protocol, what }
    }

    pub fn limits(&self) -> ListenerLimits {
        self.limits
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, once one of the listener's slots is free. Accept errors (a full
    /// descriptor table, a peer that reset before accept) are logged and retried after a pause.
    pub async fn accept(&self) -> Connection {
        loop {
            let permit = match self.permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    tracing::warn!(
                        listener = self.what,
                        max_connections = self.limits.max_connections,
                        "connection cap reached; new clients wait until a connection closes"
                    );
                    match self.permits.clone().acquire_owned().await {
                        Ok(permit) => permit,
                        Err(_) => std::future::pending().await,
                    }
                }
            };
            match self.listener.accept().await {
                Ok((stream, remote)) => {
                    // Responses go out in more than one write: never let Nagle hold the last one.
                    let _ = stream.set_nodelay(true);
                    self.occupancy.opened();
                    let slot = Slot { _permit: permit, occupancy: self.occupancy.clone() };
                    return Connection::new(stream, remote, slot, self.limits, self.protocol);
                }
                Err(error) => {
                    tracing::warn!(listener = self.what, %error, "cannot accept a connection; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_incoming(self) -> impl futures::Stream<Item = Result<Connection, io::Error>> + Send {
        futures::stream::unfold(self, |listener| async move {
            let connection = listener.accept().await;
            Some((Ok(connection), listener))
        })
    }
}

/// What the watchdog knows of a connection.
#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    /// The last time the connection had something to do (accept, a request's end, bytes).
    idle_since: Instant,
    /// When the first byte of a request head arrived (HTTP/1), until the request starts.
    head_started: Option<Instant>,
}

/// A connection's activity, shared between its I/O and the service that marks requests.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<ActivityState>,
    limits: ListenerLimits,
    protocol: Protocol,
}

/// Marks a request as inside the service until it is dropped.
pub struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.activity.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.idle_since = Instant::now();
    }
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request has been parsed and enters the service.
    pub fn request(self: &Arc<Self>) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.head_started = None;
        drop(state);
        InFlight { activity: self.clone() }
    }

    fn bytes_read(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        match self.protocol {
            Protocol::Grpc => state.idle_since = now,
            Protocol::Http1 if state.in_flight == 0 && state.head_started.is_none() => state.head_started = Some(now),
            Protocol::Http1 => {}
        }
    }

    fn bytes_written(&self) {
        self.lock().idle_since = Instant::now();
    }

    /// When the connection must be closed if nothing changes; `None` while a request runs.
    fn deadline(&self) -> Option<Instant> {
        let state = self.lock();
        if state.in_flight > 0 {
            return None;
        }
        Some(match state.head_started {
            Some(started) => started + self.limits.header_timeout,
            None => state.idle_since + self.limits.idle_timeout,
        })
    }
}

/// A connection's place in its listener, given back when the connection is dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    occupancy: Arc<Occupancy>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.occupancy.closed();
    }
}

/// An accepted connection: the socket, its slot in the listener and its watchdog.
pub struct Connection {
    stream: TcpStream,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    _slot: Slot,
    activity: Arc<Activity>,
    timer: Pin<Box<Sleep>>,
    /// A fault response that replaces one of hyper's bodiless error responses, still to be sent.
    replacement: Option<(Vec<u8>, usize)>,
}

impl Connection {
    fn new(stream: TcpStream, remote: SocketAddr, slot: Slot, limits: ListenerLimits, protocol: Protocol) -> Self {
        let now = Instant::now();
        let activity = Arc::new(Activity {
            state: Mutex::new(ActivityState { in_flight: 0, idle_since: now, head_started: None }),
            limits,
            protocol,
        });
        let local = stream.local_addr().ok();
        Self {
            stream,
            remote,
            local,
            _slot: slot,
            activity,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            replacement: None,
        }
    }

    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Called when an I/O operation would wait: fails it once the connection is past its deadline.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(deadline) = self.activity.deadline() else { return Ok(()) };
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the peer stalled past the connection's timeout"));
        }
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        // Registers the wake-up; the deadline is checked again when it fires.
        if self.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        Ok(())
    }

    /// Sends what is left of a replacement response; `Ready(Ok)` once it is all out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.replacement {
            if *sent == bytes.len() {
                self.replacement = None;
                break;
            }
            match Pin::new(&mut self.stream).poll_write(cx, &bytes[*sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => *sent += written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// hyper answers a request it cannot parse (400, 414 URI too long, 431 headers too large) with a
    /// bare status line and closes the connection. Cinder's clients expect a fault body on every
    /// error, and every response of ours has one, so a bodiless 4xx head can only be hyper's: it is
    /// replaced by the same status with a Cinder fault. Returns whether `buf` was replaced.
    fn replace_bare_error(&mut self, buf: &[u8]) -> bool {
        if self.activity.protocol != Protocol::Http1 || self.replacement.is_some() {
            return false;
        }
        let Some(status) = bare_error_status(buf) else { return false };
        self.replacement = Some((fault_response(status), 0));
        true
    }
}

/// The status of `head` when it is a complete HTTP/1.1 4xx response head without a body.
fn bare_error_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.strip_prefix(b"HTTP/1.1 4")?).ok()?;
    let (head, rest) = text.split_once("\r\n\r\n")?;
    if !rest.is_empty() || !head.to_ascii_lowercase().contains("\r\ncontent-length: 0") {
        return None;
    }
    let digits: String = head.chars().take(2).collect();
    Some(400 + digits.parse::<u16>().ok()?)
}

/// A complete response: `status` with a Cinder fault body, closing the connection.
fn fault_response(status: u16) -> Vec<u8> {
    let (reason, message) = match status {
        414 => ("URI Too Long", "the request URL is too long"),
        431 => ("Request Header Fields Too Large", "the request headers are too large or too many"),
        _ => ("Bad Request", "the request could not be parsed as HTTP/1.1"),
    };
    let name = cinder_fault_for_status(status);
    let body = format!(r#"{{"{name}": {{"code": {status}, "message": "{message}"}}}}"#);
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.activity.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match self.check_deadline(cx) {
                Ok(()) => Poll::Pending,
                Err(error) => Poll::Ready(Err(error)),
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.poll_replacement(cx)?.is_pending() {
            return self.pending_write(cx);
        }
        if self.replace_bare_error(buf) {
            return match self.poll_replacement(cx) {
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    self.activity.bytes_written();
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.pending_write(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // One buffer at a time keeps the replacement check on whole response heads.
        let first = bufs.iter().find(|buf| !buf.is_empty()).map_or(&[][..], |buf| &buf[..]);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.poll_replacement(cx)?.is_pending() {
            return self.pending_write(cx).map_ok(drop);
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.poll_replacement(cx)?.is_pending() {
            return self.pending_write(cx).map_ok(drop);
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connection {
    /// A write that must wait: a peer that stopped reading is cut off at the deadline too.
    fn pending_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match self.check_deadline(cx) {
            Ok(()) => Poll::Pending,
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo { local_addr: self.local, remote_addr: Some(self.remote) }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn limits() -> ListenerLimits {
        ListenerLimits {
            max_connections: 2,
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
        }
    }

    async fn listener(protocol: Protocol) -> (BoundedListener, SocketAddr) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        (BoundedListener::new(tcp, limits(), protocol, "test"), addr)
    }

    /// Reads from the server side until it fails or ends; returns the error kind, if any.
    async fn read_until_closed(connection: &mut Connection) -> Option<io::ErrorKind> {
        let mut buffer = [0u8; 64];
        loop {
            match connection.read(&mut buffer).await {
                Ok(0) => return None,
                Ok(_) => continue,
                Err(error) => return Some(error.kind()),
            }
        }
    }

    #[tokio::test]
    async fn accepted_sockets_send_without_waiting_for_acks() {
        // Nagle's algorithm holds a response's last segment until the previous one is acked, and
        // a client that delays its acks then waits ~40 ms for every response of more than one
        // write. Every listener (REST and gRPC) turns it off on what it accepts.
        for protocol in [Protocol::Http1, Protocol::Grpc] {
            let (listener, addr) = listener(protocol).await;
            let _client = TcpStream::connect(addr).await.unwrap();
            let connection = listener.accept().await;
            assert!(connection.stream.nodelay().unwrap(), "{protocol:?} socket keeps Nagle's algorithm on");
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let (listener, addr) = listener(Protocol::Http1).await;
        let _client = TcpStream::connect(addr).await.unwrap();
        let mut connection = listener.accept().await;
        assert_eq!(read_until_closed(&mut connection).await, Some(io::ErrorKind::TimedOut));
    }

    #[tokio::test]
    async fn a_half_sent_head_is_closed_after_the_header_timeout_even_if_it_trickles() {
        let (listener, addr) = listener(Protocol::Http1).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut connection = listener.accept().await;
        let trickle = tokio::spawn(async move {
            for byte in b"GET /v3/volumes HTTP/1.1\r\nHost: x\r\n" {
                if client.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client
        });
        // The trickle outlasts the header timeout but not the idle timeout between its bytes.
        assert_eq!(read_until_closed(&mut connection).await, Some(io::ErrorKind::TimedOut));
        drop(trickle.await);
    }

    #[tokio::test]
    async fn a_request_in_the_service_is_never_cut() {
        let (listener, addr) = listener(Protocol::Http1).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut connection = listener.accept().await;
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        connection.read_exact(&mut byte).await.unwrap();
        let in_flight = connection.activity().request();
        let waited = tokio::time::timeout(Duration::from_millis(900), connection.read(&mut byte)).await;
        assert!(waited.is_err(), "the read waited past both timeouts without failing");
        drop(in_flight);
        assert_eq!(read_until_closed(&mut connection).await, Some(io::ErrorKind::TimedOut));
    }

    #[tokio::test]
    async fn grpc_connections_stay_open_while_the_peer_talks() {
        let (listener, addr) = listener(Protocol::Grpc).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut connection = listener.accept().await;
        let talker = tokio::spawn(async move {
            for _ in 0..8 {
                client.write_all(b"p").await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            client
        });
        let mut received = 0;
        let mut byte = [0u8; 1];
        while received < 8 {
            connection.read_exact(&mut byte).await.expect("open while the peer talks");
            received += 1;
        }
        let _client = talker.await.unwrap();
        assert_eq!(read_until_closed(&mut connection).await, Some(io::ErrorKind::TimedOut));
    }

    #[tokio::test]
    async fn the_cap_holds_new_clients_back_until_a_connection_closes() {
        let (listener, addr) = listener(Protocol::Http1).await;
        let _first = TcpStream::connect(addr).await.unwrap();
        let _second = TcpStream::connect(addr).await.unwrap();
        let a = listener.accept().await;
        let _b = listener.accept().await;
        let _third = TcpStream::connect(addr).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(200), listener.accept()).await.is_err(), "over the cap");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.expect("a slot was freed");
    }

    #[test]
    fn bare_error_heads_are_recognised_and_ours_are_not() {
        assert_eq!(
            bare_error_status(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"),
            Some(431)
        );
        assert_eq!(bare_error_status(b"HTTP/1.1 414 URI Too Long\r\ndate: x\r\ncontent-length: 0\r\n\r\n"), Some(414));
        assert_eq!(bare_error_status(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 40\r\n\r\n"), None);
        assert_eq!(bare_error_status(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
        let response = String::from_utf8(fault_response(414)).unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1;
        let fault: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(fault["computeFault"]["code"], 414);
    }

    #[test]
    fn listeners_share_what_the_reserve_leaves() {
        let limits = ListenerLimits::default();
        assert_eq!(limits.within_descriptor_budget(20_000, 3).max_connections, 4096);
        assert_eq!(limits.within_descriptor_budget(1024, 2).max_connections, 384);
        assert_eq!(limits.within_descriptor_budget(100, 1).max_connections, 1);
    }
}
