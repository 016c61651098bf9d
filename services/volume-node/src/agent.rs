//! The NodeAgent gRPC service: the scheduler's commands to this host, each idempotent by UUID and
//! serialised per volume so a retry never races the call it retries.

use std::{collections::HashMap, sync::Arc};

use basalt::{
    ServiceError,
    ids::VolumeId,
    proto::{
        CapacityReport, NodeCreateVolumeRequest, NodeDeleteVolumeRequest, NodeDeleteVolumeResponse,
        NodeGetCapacityRequest, NodeGetVolumeRequest, NodeVolume, node_agent_server::NodeAgent,
    },
};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tonic::{Request, Response, Status};

use crate::{
    backend::{Backend, BackendVolume},
    reporter::Reporter,
};

#[derive(Clone)]
pub struct Agent {
    backend: Arc<Backend>,
    reporter: Arc<Reporter>,
    locks: Arc<VolumeLocks>,
}

impl Agent {
    pub fn new(backend: Arc<Backend>, reporter: Arc<Reporter>) -> Self {
        Self {
            backend,
            reporter,
            locks: Arc::default(),
        }
    }

    pub fn backend(&self) -> Arc<Backend> {
        self.backend.clone()
    }
}

/// One async lock per volume id; entries are dropped when nobody holds or waits for them.
#[derive(Default)]
struct VolumeLocks {
    locks: std::sync::Mutex<HashMap<VolumeId, Arc<Mutex<()>>>>,
}

impl VolumeLocks {
    async fn lock(&self, volume_id: VolumeId) -> VolumeLockGuard<'_> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(volume_id).or_default().clone()
        };
        VolumeLockGuard {
            guard: Some(lock.lock_owned().await),
            locks: self,
            volume_id,
        }
    }
}

struct VolumeLockGuard<'a> {
    guard: Option<OwnedMutexGuard<()>>,
    locks: &'a VolumeLocks,
    volume_id: VolumeId,
}

impl Drop for VolumeLockGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .locks
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map holds the lock when strong_count is 1: nobody waits for it any more.
        if locks
            .get(&self.volume_id)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.volume_id);
        }
    }
}

fn to_proto(volume: BackendVolume) -> NodeVolume {
    NodeVolume {
        volume_id: volume.volume_id.to_string(),
        pool: volume.pool,
        size_bytes: volume.size_bytes,
        path: volume.path,
        allocated_bytes: volume.allocated_bytes,
    }
}

#[tonic::async_trait]
impl NodeAgent for Agent {
    async fn create_volume(
        &self,
        request: Request<NodeCreateVolumeRequest>,
    ) -> Result<Response<NodeVolume>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        if !request.source_snapshot_id.is_empty() || !request.source_volume_id.is_empty() {
            return Err(ServiceError::invalid("this node creates empty volumes only; clear source_snapshot_id and source_volume_id").into());
        }
        let _guard = self.locks.lock(volume_id).await;
        let volume = self
            .backend
            .create_volume(&request.pool, volume_id, request.size_bytes)
            .await?;
        tracing::info!(volume_id = %volume_id, pool = %request.pool, size_bytes = request.size_bytes, "volume created");
        self.reporter.report_soon();
        Ok(Response::new(to_proto(volume)))
    }

    async fn delete_volume(
        &self,
        request: Request<NodeDeleteVolumeRequest>,
    ) -> Result<Response<NodeDeleteVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let _guard = self.locks.lock(volume_id).await;
        let existed = self.backend.delete_volume(&request.pool, volume_id).await?;
        tracing::info!(volume_id = %volume_id, pool = %request.pool, existed, "volume deleted");
        self.reporter.report_soon();
        Ok(Response::new(NodeDeleteVolumeResponse { existed }))
    }

    async fn get_volume(
        &self,
        request: Request<NodeGetVolumeRequest>,
    ) -> Result<Response<NodeVolume>, Status> {
        let request = request.into_inner();
        let volume_id = VolumeId::parse(&request.volume_id)?;
        match self.backend.get_volume(&request.pool, volume_id).await? {
            Some(volume) => Ok(Response::new(to_proto(volume))),
            None => Err(ServiceError::not_found(format!(
                "volume {volume_id} is not in pool {:?} on this node",
                request.pool
            ))
            .into()),
        }
    }

    async fn get_capacity(
        &self,
        _request: Request<NodeGetCapacityRequest>,
    ) -> Result<Response<CapacityReport>, Status> {
        Ok(Response::new(
            self.reporter.current_report(&self.backend).await?,
        ))
    }
}
