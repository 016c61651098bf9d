//! The VolumeService gRPC surface: authenticates the call context and hands over to the domain
//! modules.

use std::{sync::Arc, time::Instant};

use basalt::{
    context::CallContext,
    proto::{
        CreateVolumeRequest, DeleteVolumeRequest, GetVolumeRequest, ListPoolsRequest,
        ListPoolsResponse, ListServicesRequest, ListServicesResponse, ListVolumesRequest,
        ListVolumesResponse, Pool, PoolRef, Service, Volume, volume_service_server::VolumeService,
    },
};
use tonic::{Request, Response, Status};

use crate::{
    Core,
    volumes::{Volumes, to_proto},
};

const GIB: u64 = 1 << 30;

pub struct VolumeApi {
    core: Arc<Core>,
    volumes: Volumes,
}

impl VolumeApi {
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            volumes: Volumes::new(core.clone()),
            core,
        }
    }
}

fn context<T>(request: &Request<T>) -> Result<CallContext, Status> {
    CallContext::from_metadata(request.metadata()).map_err(Status::from)
}

#[tonic::async_trait]
impl VolumeService for VolumeApi {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        let context = context(&request)?;
        let model = self.volumes.create(&context, request.into_inner()).await?;
        Ok(Response::new(to_proto(&model)))
    }

    async fn get_volume(
        &self,
        request: Request<GetVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        let context = context(&request)?;
        let model = self
            .volumes
            .get(&context, &request.get_ref().volume_id)
            .await?;
        Ok(Response::new(to_proto(&model)))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let context = context(&request)?;
        let (rows, page) = self.volumes.list(&context, request.get_ref()).await?;
        Ok(Response::new(ListVolumesResponse {
            volumes: rows.iter().map(to_proto).collect(),
            page: Some(page),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        let context = context(&request)?;
        let model = self.volumes.delete(&context, request.get_ref()).await?;
        Ok(Response::new(to_proto(&model)))
    }

    async fn list_pools(
        &self,
        request: Request<ListPoolsRequest>,
    ) -> Result<Response<ListPoolsResponse>, Status> {
        context(&request)?.require_admin("listing pools")?;
        let now = Instant::now();
        let mut pools = Vec::new();
        for node in self.core.capacity.nodes() {
            let report = &node.report;
            for capacity in &report.pools {
                let name = format!("{}@{}#{}", report.node_id, capacity.backend, capacity.name);
                if !request.get_ref().name.is_empty() && request.get_ref().name != name {
                    continue;
                }
                pools.push(Pool {
                    name,
                    r#ref: Some(PoolRef {
                        node_id: report.node_id.clone(),
                        backend: capacity.backend.clone(),
                        pool: capacity.name.clone(),
                    }),
                    availability_zone: report.availability_zone.clone(),
                    total_capacity_gib: capacity.total_bytes / GIB,
                    free_capacity_gib: capacity.free_bytes / GIB,
                    provisioned_capacity_gib: capacity.provisioned_bytes / GIB,
                    allocated_capacity_gib: capacity.allocated_bytes / GIB,
                    thin_provisioning_support: capacity.thin_provisioning_support,
                    thick_provisioning_support: capacity.thick_provisioning_support,
                    max_over_subscription_ratio: capacity.max_over_subscription_ratio,
                    reserved_percentage: capacity.reserved_percentage,
                    total_volumes: capacity.total_volumes,
                    capabilities: capacity.capabilities.clone(),
                    schedulable: node.is_fresh(now),
                    reported_at: report.reported_at,
                });
            }
        }
        Ok(Response::new(ListPoolsResponse { pools }))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        context(&request)?.require_admin("listing services")?;
        let filter = request.get_ref();
        let now = Instant::now();
        let mut services = vec![Service {
            binary: "basalt-scheduler".into(),
            host: self.core.instance.clone(),
            zone: "nova".into(),
            status: "enabled".into(),
            state: "up".into(),
            updated_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            disabled_reason: String::new(),
        }];
        for node in self.core.capacity.nodes() {
            let backends: std::collections::BTreeSet<&str> = node
                .report
                .pools
                .iter()
                .map(|pool| pool.backend.as_str())
                .collect();
            for backend in backends {
                services.push(Service {
                    binary: "basalt-volume".into(),
                    host: format!("{}@{backend}", node.report.node_id),
                    zone: node.report.availability_zone.clone(),
                    status: "enabled".into(),
                    state: if node.is_fresh(now) { "up" } else { "down" }.into(),
                    updated_at: node.report.reported_at,
                    disabled_reason: String::new(),
                });
            }
        }
        services.retain(|service| {
            (filter.binary.is_empty() || service.binary == filter.binary)
                && (filter.host.is_empty()
                    || service.host == filter.host
                    || service.host.starts_with(&format!("{}@", filter.host)))
        });
        Ok(Response::new(ListServicesResponse { services }))
    }
}
