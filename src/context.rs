//! Who is calling: the project, user and roles carried in gRPC metadata on every VolumeService
//! call. The gateway fills them from the Cinder token; the scheduler enforces project scoping
//! with them on every call.

use tonic::metadata::{MetadataMap, MetadataValue};

use crate::{ServiceError, error::ErrorCode, ids::ProjectId};

pub const PROJECT_HEADER: &str = "x-basalt-project-id";
pub const USER_HEADER: &str = "x-basalt-user-id";
pub const ROLES_HEADER: &str = "x-basalt-roles";
const ADMIN_ROLE: &str = "admin";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub project_id: ProjectId,
    pub user_id: String,
    pub is_admin: bool,
}

impl CallContext {
    pub fn new(project_id: ProjectId, user_id: impl Into<String>, is_admin: bool) -> Self {
        Self { project_id, user_id: user_id.into(), is_admin }
    }

    pub fn from_metadata(metadata: &MetadataMap) -> Result<Self, ServiceError> {
        let text = |key: &str| metadata.get(key).and_then(|value| value.to_str().ok()).map(str::trim);
        let project = text(PROJECT_HEADER).filter(|value| !value.is_empty()).ok_or_else(|| {
            ServiceError::new(
                ErrorCode::Unauthenticated,
                format!("missing {PROJECT_HEADER} metadata: every call must name the project it acts for"),
            )
        })?;
        let project_id = ProjectId::parse(project)?;
        let user_id = text(USER_HEADER).unwrap_or_default().to_owned();
        let is_admin = text(ROLES_HEADER)
            .map(|roles| roles.split(',').any(|role| role.trim().eq_ignore_ascii_case(ADMIN_ROLE)))
            .unwrap_or(false);
        Ok(Self { project_id, user_id, is_admin })
    }

    /// Wraps a message in a request that carries this context.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.write_to(request.metadata_mut());
        request
    }

    fn write_to(&self, metadata: &mut MetadataMap) {
        // Ids are validated to a header-safe alphabet, so these conversions cannot fail for them.
        if let Ok(value) = MetadataValue::try_from(self.project_id.as_str()) {
            metadata.insert(PROJECT_HEADER, value);
        }
        if let Ok(value) = MetadataValue::try_from(self.user_id.as_str()) {
            metadata.insert(USER_HEADER, value);
        }
        if self.is_admin {
            metadata.insert(ROLES_HEADER, MetadataValue::from_static(ADMIN_ROLE));
        }
    }

    pub fn require_admin(&self, action: &str) -> Result<(), ServiceError> {
        if self.is_admin {
            return Ok(());
        }
        Err(ServiceError::new(ErrorCode::Forbidden, format!("{action} is an admin-only action")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_round_trips_through_metadata() {
        let context = CallContext::new(ProjectId::parse("0123456789abcdef0123456789abcdef").unwrap(), "u1", true);
        let request = context.request(());
        assert_eq!(CallContext::from_metadata(request.metadata()).unwrap(), context);
    }

    #[test]
    fn missing_project_is_unauthenticated() {
        let error = CallContext::from_metadata(&MetadataMap::new()).unwrap_err();
        assert_eq!(error.code, ErrorCode::Unauthenticated);
    }

    #[test]
    fn roles_other_than_admin_are_not_admin() {
        let mut metadata = MetadataMap::new();
        metadata.insert(PROJECT_HEADER, "0123456789abcdef0123456789abcdef".parse().unwrap());
        metadata.insert(ROLES_HEADER, "member, reader".parse().unwrap());
        let context = CallContext::from_metadata(&metadata).unwrap();
        assert!(!context.is_admin);
        assert_eq!(context.require_admin("reset status").unwrap_err().code, ErrorCode::Forbidden);
    }
}
