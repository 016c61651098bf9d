//! Status events on the bus (`basalt.v1.events.<kind>`), published after each committed
//! transition. Soft state: a lost event changes nothing, the database stays the truth.

use basalt::proto::StatusEvent;

use crate::Core;

pub const VOLUME: &str = "volume";
pub const SNAPSHOT: &str = "snapshot";
pub const BACKUP: &str = "backup";
pub const GROUP: &str = "group";
pub const GROUP_SNAPSHOT: &str = "group_snapshot";
/// The `to_status` of a resource whose row was removed.
pub const DELETED: &str = "deleted";

/// A status change to announce once its transaction committed.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub kind: &'static str,
    pub id: String,
    pub project: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

impl Core {
    /// Announces committed changes, in order.
    pub async fn publish(&self, events: impl IntoIterator<Item = PendingEvent>) {
        for event in events {
            self.publish_status(event.kind, &event.id, &event.project, &event.from, &event.to, &event.reason).await;
        }
    }

    pub async fn publish_status(&self, kind: &str, id: &str, project: &str, from: &str, to: &str, reason: &str) {
        if from == to {
            return;
        }
        let event = StatusEvent {
            resource_kind: kind.into(),
            resource_id: id.into(),
            project_id: project.into(),
            from_status: from.into(),
            to_status: to.into(),
            at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            reason: reason.into(),
        };
        if let Err(error) = self.bus.publish_event(&event).await {
            tracing::warn!(%error, resource_id = id, "cannot publish a status event");
        }
    }
}
