//! The CSI Identity service: who the plugin is, what it offers, and whether it is ready, which it
//! is only while the control plane answers.

use basalt::channel::Channel;
use basalt::csi::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest, GetPluginInfoResponse,
    PluginCapability, ProbeRequest, ProbeResponse,
    plugin_capability::{self, service, volume_expansion},
};
use tonic::{Request, Response, Status};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{DRIVER_NAME, VENDOR_VERSION};

pub struct Identity {
    scheduler: Channel,
}

impl Identity {
    pub fn new(scheduler: Channel) -> Self {
        Self { scheduler }
    }
}

fn service(kind: service::Type) -> PluginCapability {
    PluginCapability {
        r#type: Some(plugin_capability::Type::Service(plugin_capability::Service { r#type: kind as i32 })),
    }
}

#[tonic::async_trait]
impl basalt::csi::identity_server::Identity for Identity {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.into(),
            vendor_version: VENDOR_VERSION.into(),
            manifest: [("url".to_owned(), "https://basalt.dev".to_owned())].into(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let online = PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(plugin_capability::VolumeExpansion {
                r#type: volume_expansion::Type::Online as i32,
            })),
        };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: vec![
                service(service::Type::ControllerService),
                service(service::Type::VolumeAccessibilityConstraints),
                online,
            ],
        }))
    }

    async fn probe(&self, _request: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        let mut health = HealthClient::new(self.scheduler.clone());
        let answer = health.check(HealthCheckRequest { service: String::new() }).await;
        let ready = matches!(answer, Ok(reply) if reply.get_ref().status == ServingStatus::Serving as i32);
        if !ready {
            tracing::warn!("probe: the control plane does not answer");
        }
        Ok(Response::new(ProbeResponse { ready: Some(ready) }))
    }
}
