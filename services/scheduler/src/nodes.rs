//! Clients of the volume nodes' NodeAgent, found through their capacity reports.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use basalt::{ErrorCode, ServiceError, channel::channel, proto::node_agent_client::NodeAgentClient};
use tonic::transport::Channel;

use crate::capacity::CapacityView;

#[derive(Default)]
pub struct NodeClients {
    channels: Mutex<HashMap<String, Channel>>,
}

impl NodeClients {
    /// A client for `node_id` at the endpoint of its latest report. Fails with `Unavailable` when
    /// the node never reported or went stale, so callers retry rather than give up.
    pub fn client(&self, capacity: &CapacityView, node_id: &str) -> Result<NodeAgentClient<Channel>, ServiceError> {
        let node = capacity.node(node_id).ok_or_else(|| {
            ServiceError::new(
                ErrorCode::Unavailable,
                format!("volume node {node_id} has not reported since this scheduler started"),
            )
        })?;
        if !node.is_fresh(Instant::now()) {
            return Err(ServiceError::unavailable(format!(
                "volume node {node_id} stopped reporting; waiting for it to come back"
            )));
        }
        let endpoint = node.report.endpoint;
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let channel = match channels.get(&endpoint) {
            Some(channel) => channel.clone(),
            None => {
                let channel = channel(&endpoint)?;
                channels.insert(endpoint, channel.clone());
                channel
            }
        };
        Ok(NodeAgentClient::new(channel))
    }
}
