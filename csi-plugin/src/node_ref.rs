//! A CSI node id: the host's name, and its iSCSI initiator name when it has one, joined by a comma
//! (`node-1,iqn.1993-08.org.debian:01:ab12`). The orchestrator hands it from NodeGetInfo to
//! ControllerPublish, so the controller knows both whether the volume is local to that host and
//! which initiator to let in, without a registry of its own.

use basalt::ids::NodeId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub name: NodeId,
    pub initiator: Option<String>,
}

impl NodeRef {
    pub fn encode(&self) -> String {
        match &self.initiator {
            Some(initiator) => format!("{},{initiator}", self.name),
            None => self.name.to_string(),
        }
    }

    /// `None` for anything this plugin's nodes never report: the node is unknown.
    pub fn parse(text: &str) -> Option<Self> {
        let (name, initiator) = match text.split_once(',') {
            Some((name, initiator)) => (name, Some(initiator)),
            None => (text, None),
        };
        let name = NodeId::parse(name).ok()?;
        if let Some(initiator) = initiator
            && !is_initiator_name(initiator)
        {
            return None;
        }
        Some(Self { name, initiator: initiator.map(str::to_owned) })
    }
}

/// An iSCSI qualified name (`iqn.YYYY-MM.<reversed domain>[:<anything>]`) or an EUI-64 name.
pub fn is_initiator_name(text: &str) -> bool {
    let printable = !text.is_empty() && text.len() <= 223 && text.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    printable && (text.starts_with("iqn.") || text.starts_with("eui."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_round_trip_and_strangers_are_unknown() {
        for text in ["node-1", "node-1,iqn.1993-08.org.debian:01:ab12"] {
            assert_eq!(NodeRef::parse(text).unwrap().encode(), text);
        }
        for stranger in ["", "some fake node", "a,b", "../x", "node,iqn.x y"] {
            assert!(NodeRef::parse(stranger).is_none(), "{stranger:?}");
        }
    }
}
