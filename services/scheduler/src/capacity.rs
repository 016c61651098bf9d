//! The scheduler's view of the nodes: the last capacity report of each, kept from the bus. A node
//! whose reports stop for three of its own intervals is stale: unschedulable, not "down".

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use basalt::{ServiceError, bus::Bus, proto::CapacityReport};
use futures::StreamExt;

use crate::{placement::PoolCandidate, pool_table::PoolTable};

/// Reports older than this many of the node's intervals make it unschedulable.
const STALE_AFTER_INTERVALS: u32 = 3;
/// A floor on the staleness window, so a very short interval does not flap.
const MIN_STALE_WINDOW: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct NodeReport {
    pub report: CapacityReport,
    pub received_at: Instant,
    /// The report's pools as placement sees them, made once when the report comes.
    pub pools: Vec<PoolCandidate>,
}

impl NodeReport {
    fn new(report: CapacityReport) -> Self {
        let pools = report
            .pools
            .iter()
            .map(|pool| PoolCandidate::from_report(&report.node_id, &report.availability_zone, pool))
            .collect();
        Self { report, received_at: Instant::now(), pools }
    }

    pub fn stale_window(&self) -> Duration {
        (Duration::from_millis(u64::from(self.report.report_interval_ms)) * STALE_AFTER_INTERVALS).max(MIN_STALE_WINDOW)
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.received_at) <= self.stale_window()
    }
}

#[derive(Debug, Default)]
pub struct CapacityView {
    /// By node id, so every reader sees the nodes in one order.
    nodes: RwLock<BTreeMap<String, Arc<NodeReport>>>,
    /// The reports' pools as placement walks them. Taken after `nodes` when both are.
    pools: RwLock<PoolTable>,
    /// One reader of the bookings from the database at a time; the others wait for its figures.
    pub reading_bookings: tokio::sync::Mutex<()>,
}

impl CapacityView {
    /// Keeps `report` unless it is older than what we hold from the same boot of that node.
    pub fn record(&self, report: CapacityReport) -> bool {
        let mut nodes = self.nodes.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = nodes.get(&report.node_id)
            && known.report.boot_id == report.boot_id
            && known.report.sequence >= report.sequence
        {
            return false;
        }
        let node = Arc::new(NodeReport::new(report));
        let previous = nodes.insert(node.report.node_id.clone(), node.clone());
        let previous_pools = previous.as_ref().map_or(&[][..], |previous| &previous.pools[..]);
        self.update_pools(|table| table.report(previous_pools, &node.pools, node.received_at, node.stale_window()));
        true
    }

    /// Reads the placement table.
    pub fn read_pools<T>(&self, read: impl FnOnce(&PoolTable) -> T) -> T {
        read(&self.pools.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Changes the placement table, alone: one decision, a report, or the bookings read.
    pub fn update_pools<T>(&self, change: impl FnOnce(&mut PoolTable) -> T) -> T {
        change(&mut self.pools.write().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Every node's latest report, by node id.
    pub fn nodes(&self) -> Vec<Arc<NodeReport>> {
        self.nodes.read().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect()
    }

    pub fn node(&self, node_id: &str) -> Option<Arc<NodeReport>> {
        self.nodes.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(node_id).cloned()
    }

    /// The pool `host` names: `node@backend#pool`, or `node@backend` when the backend has one
    /// pool on the node; from the node's latest report.
    pub fn pool_of_host(&self, host: &str) -> Result<PoolCandidate, ServiceError> {
        let (node_backend, pool_name) = match host.split_once('#') {
            Some((node_backend, pool)) => (node_backend, Some(pool)),
            None => (host, None),
        };
        let (node_id, backend) = node_backend.split_once('@').ok_or_else(|| {
            ServiceError::invalid(format!(
                "host {:?} is not node@backend or node@backend#pool, as os-services and get_pools name them",
                basalt::error::excerpt(host)
            ))
        })?;
        let node = self.node(node_id).filter(|node| node.is_fresh(Instant::now())).ok_or_else(|| {
            ServiceError::not_found(format!("host {} is not reporting", basalt::error::excerpt(host)))
        })?;
        let mut pools = node.pools.iter().filter(|pool| pool.identity.backend == backend);
        let pool = match pool_name {
            Some(name) => pools.find(|pool| pool.identity.pool == name),
            None => match (pools.next(), pools.next()) {
                (Some(only), None) => Some(only),
                (Some(_), Some(_)) => {
                    return Err(ServiceError::invalid(format!(
                        "backend {backend} has several pools on {node_id}; name one as node@backend#pool"
                    )));
                }
                _ => None,
            },
        };
        let pool = pool.ok_or_else(|| {
            ServiceError::not_found(format!("host {} has no such pool", basalt::error::excerpt(host)))
        })?;
        Ok(pool.clone())
    }

    /// Pool `pool` of node `node_id` as placement sees it, from the node's latest report.
    pub fn pool(&self, node_id: &str, pool: &str) -> Option<PoolCandidate> {
        self.node(node_id)?.pools.iter().find(|candidate| candidate.identity.pool == pool).cloned()
    }

    /// Returns the loop that follows the bus until `stopped` resolves. Subscribes before returning, so a poll sent
    /// right after cannot be answered before we listen.
    pub async fn follow(
        self: Arc<Self>,
        bus: &Bus,
        stopped: impl Future<Output = ()> + Send + 'static,
    ) -> Result<impl Future<Output = ()> + Send + 'static, ServiceError> {
        let mut reports = bus.subscribe_capacity().await?;
        Ok(async move {
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    report = reports.next() => match report {
                        Some(report) => {
                            self.record(report);
                        }
                        None => {
                            tracing::warn!("the capacity bus closed; placement keeps the last reports");
                            return;
                        }
                    },
                    _ = &mut stopped => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, boot: &str, sequence: u64) -> CapacityReport {
        CapacityReport {
            node_id: node.into(),
            boot_id: boot.into(),
            sequence,
            report_interval_ms: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn older_reports_of_the_same_boot_are_ignored() {
        let view = CapacityView::default();
        assert!(view.record(report("n1", "b1", 5)));
        assert!(!view.record(report("n1", "b1", 4)));
        assert!(!view.record(report("n1", "b1", 5)));
        assert!(view.record(report("n1", "b1", 6)));
        // A restart starts its sequence again; its first report wins.
        assert!(view.record(report("n1", "b2", 1)));
        assert_eq!(view.node("n1").unwrap().report.boot_id, "b2");
    }

    #[test]
    fn a_node_goes_stale_after_three_intervals() {
        let received_at = Instant::now();
        let node = NodeReport { received_at, ..NodeReport::new(report("n1", "b1", 1)) };
        assert!(node.is_fresh(received_at + Duration::from_millis(2900)));
        assert!(!node.is_fresh(received_at + Duration::from_millis(3100)));
    }
}
