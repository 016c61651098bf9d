//! Clients of the volume nodes' NodeAgent, found through their capacity reports and held to the
//! node's identity: the address comes from a report, but the call goes through only when the peer
//! there proves, by its mesh certificate, that it is the node the report is about.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use basalt::channel::Channel;
use basalt::{
    ErrorCode, ServiceError,
    channel::channel,
    ids::NodeId,
    proto::node_agent_client::NodeAgentClient,
    tls::{MeshTls, Role},
};

use crate::capacity::CapacityView;

pub struct NodeClients {
    tls: MeshTls,
    /// By node id, with the endpoint it was made for: a node that moves gets a new channel,
    /// checked for the same name, in place of the old one.
    channels: Mutex<HashMap<String, (String, Channel)>>,
}

impl NodeClients {
    pub fn new(tls: MeshTls) -> Self {
        Self { tls, channels: Mutex::new(HashMap::new()) }
    }

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
        let endpoint = &node.report.endpoint;
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((known, channel)) = channels.get(node_id)
            && known == endpoint
        {
            return Ok(NodeAgentClient::new(channel.clone()));
        }
        let role = Role::Node(NodeId::parse(node_id)?);
        let channel = channel(endpoint, &self.tls, &role)?;
        channels.insert(node_id.to_owned(), (endpoint.clone(), channel.clone()));
        Ok(NodeAgentClient::new(channel))
    }
}
