//! Topology: the segments a volume is reachable from and a node sits in. A volume is reachable
//! from its availability zone (over iSCSI from any host there); a node reports its zone and its
//! own name (a volume whose storage node it is attaches locally, with no network in between).

use std::collections::HashMap;

use basalt::csi::{Topology, TopologyRequirement};
use tonic::Status;

pub const ZONE_KEY: &str = "topology.basalt.dev/zone";
pub const NODE_KEY: &str = "topology.basalt.dev/node";

pub fn zone(zone: &str) -> Topology {
    Topology { segments: HashMap::from([(ZONE_KEY.to_owned(), zone.to_owned())]) }
}

pub fn node(zone: &str, node_id: &str) -> Topology {
    Topology {
        segments: HashMap::from([(ZONE_KEY.to_owned(), zone.to_owned()), (NODE_KEY.to_owned(), node_id.to_owned())]),
    }
}

/// The zone a new volume goes to: the first preferred segment's, else the first requisite's, else
/// `fallback` (a StorageClass parameter, or empty for placement to choose). Every requisite
/// segment must name a zone: a volume is placed by zone, so a node-only requirement cannot be met.
pub fn zone_for(requirement: Option<&TopologyRequirement>, fallback: &str) -> Result<String, Status> {
    let Some(requirement) = requirement else { return Ok(fallback.to_owned()) };
    for segment in requirement.preferred.iter().chain(&requirement.requisite) {
        if let Some(unknown) = segment.segments.keys().find(|key| *key != ZONE_KEY && *key != NODE_KEY) {
            return Err(Status::invalid_argument(format!(
                "unknown topology key {}: use {ZONE_KEY} (and {NODE_KEY})",
                basalt::error::excerpt(unknown)
            )));
        }
    }
    let zones: Vec<&String> = requirement
        .preferred
        .iter()
        .chain(&requirement.requisite)
        .filter_map(|segment| segment.segments.get(ZONE_KEY))
        .collect();
    if !requirement.requisite.is_empty() && zones.is_empty() {
        return Err(Status::invalid_argument(format!("the requisite topology names no {ZONE_KEY}")));
    }
    let requisite_zones: Vec<&String> =
        requirement.requisite.iter().filter_map(|segment| segment.segments.get(ZONE_KEY)).collect();
    if !fallback.is_empty() && !requisite_zones.is_empty() && !requisite_zones.iter().any(|zone| *zone == fallback) {
        return Err(Status::invalid_argument(format!(
            "the availability zone {fallback:?} of the parameters is not among the requisite topology's zones"
        )));
    }
    Ok(zones.first().map(|zone| (*zone).clone()).unwrap_or_else(|| fallback.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirement(preferred: &[&str], requisite: &[&str]) -> TopologyRequirement {
        TopologyRequirement {
            preferred: preferred.iter().map(|name| zone(name)).collect(),
            requisite: requisite.iter().map(|name| zone(name)).collect(),
        }
    }

    #[test]
    fn preferred_zones_win_then_requisite_then_the_parameter() {
        assert_eq!(zone_for(Some(&requirement(&["b"], &["a", "b"])), "").unwrap(), "b");
        assert_eq!(zone_for(Some(&requirement(&[], &["a"])), "").unwrap(), "a");
        assert_eq!(zone_for(None, "c").unwrap(), "c");
        assert_eq!(zone_for(None, "").unwrap(), "");
        assert!(zone_for(Some(&requirement(&[], &["a"])), "c").is_err());
        let unknown = TopologyRequirement {
            requisite: vec![Topology { segments: [("rack".to_owned(), "r1".to_owned())].into() }],
            preferred: vec![],
        };
        assert_eq!(zone_for(Some(&unknown), "").unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
