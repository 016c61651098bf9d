//! The capacity and event bus. NATS in a distributed deployment; in `basalt up` an in-process
//! broadcast with the same interface. It carries soft state only (capacity reports, which are
//! also the node heartbeat, and status events): correctness never depends on a message arriving.

use std::{pin::Pin, sync::Arc};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::broadcast;

use crate::{
    ServiceError,
    ids::NodeId,
    proto::{CapacityPoll, CapacityReport, StatusEvent},
};

/// Subjects are `basalt.v1.capacity.<node>`; a namespace (e.g. `site-a.`) may prefix them so that
/// several deployments, or several tests, share one NATS server without seeing each other.
const CAPACITY_SUBJECT: &str = "basalt.v1.capacity";
const CAPACITY_POLL_SUBJECT: &str = "basalt.v1.capacity-poll";
const EVENTS_SUBJECT: &str = "basalt.v1.events";

/// How many messages an in-process subscriber may fall behind before it skips ahead.
const LOCAL_BUS_BACKLOG: usize = 1024;

pub type BusStream<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

#[derive(Debug, Clone)]
pub struct BusMessage {
    pub subject: String,
    pub payload: Bytes,
}

#[derive(Clone)]
pub struct Bus {
    namespace: String,
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Nats(async_nats::Client),
    Local(Arc<broadcast::Sender<BusMessage>>),
}

/// How a service proves itself to NATS, and how it checks the server: credentials so that only
/// Basalt's services publish capacity reports (a report names the address the scheduler will
/// call), TLS so that nobody reads or changes them on the way.
#[derive(Clone, Default)]
pub struct NatsSecurity {
    /// A user and its password (the NATS server's `authorization { users = [...] }`).
    pub user: Option<(String, String)>,
    /// A token (the server's `authorization { token = ... }`).
    pub token: Option<String>,
    /// The CA that signed the server's certificate: TLS is required when given.
    pub tls_ca: Option<std::path::PathBuf>,
    /// A client certificate and its key, for servers that verify clients.
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl std::fmt::Debug for NatsSecurity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NatsSecurity")
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client.as_ref().map(|(cert, _)| cert))
            .finish()
    }
}

impl Bus {
    /// Connects to NATS at `url` (e.g. `nats://127.0.0.1:4222`).
    pub async fn connect_nats(url: &str, namespace: &str, security: &NatsSecurity) -> Result<Self, ServiceError> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some((user, password)) = &security.user {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &security.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &security.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &security.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        // Errors name the server and the reason, never a credential.
        let client = options
            .connect(url)
            .await
            .map_err(|error| ServiceError::unavailable(format!("cannot connect to nats at {url}: {error}")))?;
        Ok(Self { namespace: normalise_namespace(namespace)?, transport: Transport::Nats(client) })
    }

    /// An in-process bus; clones share it.
    pub fn local() -> Self {
        let (sender, _) = broadcast::channel(LOCAL_BUS_BACKLOG);
        Self { namespace: String::new(), transport: Transport::Local(Arc::new(sender)) }
    }

    pub async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), ServiceError> {
        let subject = format!("{}{subject}", self.namespace);
        match &self.transport {
            Transport::Nats(client) => client
                .publish(subject, payload)
                .await
                .map_err(|error| ServiceError::unavailable(format!("nats publish failed: {error}"))),
            Transport::Local(sender) => {
                // No receiver is not an error: nobody listening is normal for soft state.
                let _ = sender.send(BusMessage { subject, payload });
                Ok(())
            }
        }
    }

    /// Subscribes to a subject pattern with NATS wildcards (`*` one token, `>` the rest).
    pub async fn subscribe(&self, pattern: &str) -> Result<BusStream<BusMessage>, ServiceError> {
        let pattern = format!("{}{pattern}", self.namespace);
        let namespace_len = self.namespace.len();
        match &self.transport {
            Transport::Nats(client) => {
                let subscriber = client.subscribe(pattern.clone()).await.map_err(|error| {
                    ServiceError::unavailable(format!("nats subscribe to {pattern} failed: {error}"))
                })?;
                Ok(Box::pin(subscriber.map(move |message| BusMessage {
                    subject: message.subject.as_str()[namespace_len..].to_owned(),
                    payload: message.payload,
                })))
            }
            Transport::Local(sender) => {
                let stream = tokio_stream::wrappers::BroadcastStream::new(sender.subscribe());
                Ok(Box::pin(stream.filter_map(move |item| {
                    let matched = item.ok().filter(|message| subject_matches(&pattern, &message.subject));
                    futures::future::ready(matched.map(|message| BusMessage {
                        subject: message.subject[namespace_len..].to_owned(),
                        payload: message.payload,
                    }))
                })))
            }
        }
    }

    pub async fn publish_capacity(&self, report: &CapacityReport) -> Result<(), ServiceError> {
        let node = NodeId::parse(&report.node_id)?;
        self.publish(&format!("{CAPACITY_SUBJECT}.{node}"), report.encode_to_vec().into()).await
    }

    /// Every node's capacity reports. Undecodable messages are dropped with a warning.
    pub async fn subscribe_capacity(&self) -> Result<BusStream<CapacityReport>, ServiceError> {
        let messages = self.subscribe(&format!("{CAPACITY_SUBJECT}.*")).await?;
        Ok(Box::pin(messages.filter_map(|message| futures::future::ready(decode_or_warn::<CapacityReport>(&message)))))
    }

    /// Asks every node to report now (a scheduler does this when it starts).
    pub async fn publish_capacity_poll(&self, poll: &CapacityPoll) -> Result<(), ServiceError> {
        self.publish(CAPACITY_POLL_SUBJECT, poll.encode_to_vec().into()).await
    }

    pub async fn subscribe_capacity_polls(&self) -> Result<BusStream<CapacityPoll>, ServiceError> {
        let messages = self.subscribe(CAPACITY_POLL_SUBJECT).await?;
        Ok(Box::pin(messages.filter_map(|message| futures::future::ready(decode_or_warn::<CapacityPoll>(&message)))))
    }
}

impl Bus {
    /// Publishes a status change on `basalt.v1.events.<kind>`.
    pub async fn publish_event(&self, event: &StatusEvent) -> Result<(), ServiceError> {
        self.publish(&format!("{EVENTS_SUBJECT}.{}", event.resource_kind), event.encode_to_vec().into()).await
    }

    /// Every status event, of every kind.
    pub async fn subscribe_events(&self) -> Result<BusStream<StatusEvent>, ServiceError> {
        let messages = self.subscribe(&format!("{EVENTS_SUBJECT}.*")).await?;
        Ok(Box::pin(messages.filter_map(|message| futures::future::ready(decode_or_warn::<StatusEvent>(&message)))))
    }
}

fn decode_or_warn<T: Message + Default>(message: &BusMessage) -> Option<T> {
    match T::decode(message.payload.clone()) {
        Ok(decoded) => Some(decoded),
        Err(error) => {
            tracing::warn!(subject = %message.subject, %error, "dropping an undecodable bus message");
            None
        }
    }
}

/// A namespace is empty or dot-separated tokens ending in a dot, e.g. `site-a.`.
fn normalise_namespace(namespace: &str) -> Result<String, ServiceError> {
    let trimmed = namespace.trim_end_matches('.');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let valid = trimmed
        .split('.')
        .all(|token| !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')));
    if !valid {
        return Err(ServiceError::invalid(format!(
            "invalid bus namespace {namespace:?}: use dot-separated tokens of letters, digits, '_' or '-'"
        )));
    }
    Ok(format!("{trimmed}."))
}

/// NATS subject matching: `*` matches one token, a final `>` matches one or more tokens.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for pattern_token in pattern.split('.') {
        match (pattern_token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (expected, Some(actual)) if expected == actual => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_wildcards_follow_nats() {
        assert!(subject_matches("basalt.v1.capacity.*", "basalt.v1.capacity.node-1"));
        assert!(!subject_matches("basalt.v1.capacity.*", "basalt.v1.capacity.node-1.extra"));
        assert!(!subject_matches("basalt.v1.capacity.*", "basalt.v1.capacity"));
        assert!(subject_matches("basalt.>", "basalt.v1.events.volume"));
        assert!(!subject_matches("basalt.>", "basalt"));
        assert!(!subject_matches("a.b", "a.c"));
    }

    #[test]
    fn namespaces_are_checked() {
        assert_eq!(normalise_namespace("").unwrap(), "");
        assert_eq!(normalise_namespace("site-a").unwrap(), "site-a.");
        assert_eq!(normalise_namespace("t1.x.").unwrap(), "t1.x.");
        assert!(normalise_namespace("a b").is_err());
        assert!(normalise_namespace("a.*").is_err());
    }

    #[tokio::test]
    async fn local_bus_delivers_capacity_reports_to_subscribers() {
        let bus = Bus::local();
        let mut reports = bus.subscribe_capacity().await.unwrap();
        let mut polls = bus.subscribe_capacity_polls().await.unwrap();
        let report = CapacityReport { node_id: "n1".into(), sequence: 7, ..Default::default() };
        bus.publish_capacity(&report).await.unwrap();
        bus.publish_capacity_poll(&CapacityPoll { requested_by: "s".into() }).await.unwrap();
        assert_eq!(reports.next().await.unwrap(), report);
        assert_eq!(polls.next().await.unwrap().requested_by, "s");
    }

    #[tokio::test]
    async fn a_report_with_a_bad_node_id_is_refused() {
        let bus = Bus::local();
        let report = CapacityReport { node_id: "bad node".into(), ..Default::default() };
        assert!(bus.publish_capacity(&report).await.is_err());
    }
}
