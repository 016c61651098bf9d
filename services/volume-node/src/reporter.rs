//! Capacity reports: published on the bus every interval (the node's heartbeat), right after any
//! change, and whenever a scheduler asks. Soft state: a lost report only delays placement.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use basalt::{ServiceError, bus::Bus, ids::NodeId, proto::CapacityReport};
use futures::StreamExt;
use tokio::sync::Notify;

use crate::{
    NodeConfig,
    backend::{Backend, ConfiguredBackend},
};

pub struct Reporter {
    node_id: NodeId,
    boot_id: String,
    endpoint: String,
    availability_zone: String,
    interval: Duration,
    sequence: AtomicU64,
    changed: Notify,
    bus: Bus,
}

impl Reporter {
    pub fn new(config: &NodeConfig, endpoint: String, bus: Bus) -> Self {
        Self {
            node_id: config.node_id.clone(),
            boot_id: uuid::Uuid::new_v4().to_string(),
            endpoint,
            availability_zone: config.availability_zone.clone(),
            interval: config.report_interval,
            sequence: AtomicU64::new(0),
            changed: Notify::new(),
            bus,
        }
    }

    /// Asks for a report as soon as possible (after a create or delete changed the numbers).
    pub fn report_soon(&self) {
        self.changed.notify_one();
    }

    pub async fn current_report(&self, backend: &ConfiguredBackend) -> Result<CapacityReport, ServiceError> {
        let pools = backend.capacity().await?;
        Ok(CapacityReport {
            node_id: self.node_id.to_string(),
            boot_id: self.boot_id.clone(),
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            endpoint: self.endpoint.clone(),
            availability_zone: self.availability_zone.clone(),
            report_interval_ms: u32::try_from(self.interval.as_millis()).unwrap_or(u32::MAX),
            reported_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            pools,
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    async fn publish(&self, backend: &ConfiguredBackend) {
        let report = match self.current_report(backend).await {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(%error, "cannot measure capacity; skipping this report");
                return;
            }
        };
        if let Err(error) = self.bus.publish_capacity(&report).await {
            tracing::warn!(%error, "cannot publish the capacity report");
        }
    }

    /// Subscribes to polls and returns the reporting loop, which ends when `stopped` resolves.
    pub async fn run(
        self: Arc<Self>,
        backend: Arc<ConfiguredBackend>,
        stopped: impl Future<Output = ()> + Send + 'static,
    ) -> Result<impl Future<Output = ()> + Send + 'static, ServiceError> {
        let mut polls = self.bus.subscribe_capacity_polls().await?;
        Ok(async move {
            tokio::pin!(stopped);
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = self.changed.notified() => {}
                    Some(_) = polls.next() => {}
                    _ = &mut stopped => return,
                }
                self.publish(&backend).await;
            }
        })
    }
}
