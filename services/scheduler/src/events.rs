//! Status events on the bus (`basalt.v1.events.<kind>`), published after each committed
//! transition. Soft state: a lost event changes nothing, the database stays the truth.

use basalt::proto::StatusEvent;

use crate::Core;

pub const VOLUME: &str = "volume";
pub const SNAPSHOT: &str = "snapshot";
pub const BACKUP: &str = "backup";
/// The `to_status` of a resource whose row was removed.
pub const DELETED: &str = "deleted";

impl Core {
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
