//! Who is calling: the project, user and roles carried in gRPC metadata on every VolumeService
//! call. The gateway fills them from the Keystone token (or the noauth token); the scheduler
//! checks every call against its policy with them, and scopes every query to the project.

use std::sync::Arc;

use tonic::metadata::{MetadataMap, MetadataValue};

use crate::{
    ServiceError,
    error::ErrorCode,
    ids::ProjectId,
    policy::{Credentials, Policy, Target},
};

pub const PROJECT_HEADER: &str = "x-basalt-project-id";
pub const USER_HEADER: &str = "x-basalt-user-id";
pub const ROLES_HEADER: &str = "x-basalt-roles";
/// Present (`false`) only when Keystone says the token's project is not its admin project.
pub const ADMIN_PROJECT_HEADER: &str = "x-basalt-is-admin-project";
/// The REST request's `x-openstack-request-id`, so the operations it starts can name it.
pub const REQUEST_ID_HEADER: &str = "x-openstack-request-id";

/// The roles of a project member (Keystone's implied roles expanded, as in a token).
pub const MEMBER_ROLES: &[&str] = &["member", "reader"];
/// The roles of an admin.
pub const ADMIN_ROLES: &[&str] = &["admin", "member", "reader"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub project_id: ProjectId,
    pub user_id: String,
    /// Lower-case role names.
    pub roles: Vec<String>,
    pub is_admin_project: bool,
    /// The policy's `context_is_admin` for these credentials.
    pub is_admin: bool,
    /// `req-<uuid>`: the REST request's, or one of the call's own.
    pub request_id: String,
    policy: Arc<Policy>,
}

/// A fresh request id, in Cinder's form.
pub fn new_request_id() -> String {
    format!("req-{}", uuid::Uuid::new_v4())
}

/// Whether `text` is a request id as this service makes them: `req-` and a UUID.
fn is_request_id(text: &str) -> bool {
    text.strip_prefix("req-").is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
}

impl CallContext {
    /// A caller with these roles, judged by Cinder's default policy.
    pub fn new(project_id: ProjectId, user_id: impl Into<String>, roles: &[&str]) -> Self {
        let roles = roles.iter().map(|role| role.to_ascii_lowercase()).collect();
        Self::judged(project_id, user_id.into(), roles, true, Policy::defaults(), new_request_id())
    }

    fn judged(
        project_id: ProjectId,
        user_id: String,
        roles: Vec<String>,
        is_admin_project: bool,
        policy: Arc<Policy>,
        request_id: String,
    ) -> Self {
        let mut context = Self { project_id, user_id, roles, is_admin_project, is_admin: false, request_id, policy };
        context.is_admin = context.allows("context_is_admin");
        context
    }

    /// The same caller, in a project Keystone says is not its admin project (so `role:admin` there
    /// does not pass `admin_api`).
    pub fn outside_admin_project(self) -> Self {
        Self::judged(self.project_id, self.user_id, self.roles, false, self.policy, self.request_id)
    }

    /// The same caller, for the request `request_id` names (ignored unless it is `req-<uuid>`).
    pub fn for_request(self, request_id: &str) -> Self {
        match is_request_id(request_id) {
            true => Self { request_id: request_id.to_owned(), ..self },
            false => self,
        }
    }

    /// The caller a request's metadata names, judged by `policy`.
    pub fn from_metadata(metadata: &MetadataMap, policy: Arc<Policy>) -> Result<Self, ServiceError> {
        let text = |key: &str| metadata.get(key).and_then(|value| value.to_str().ok()).map(str::trim);
        let project = text(PROJECT_HEADER).filter(|value| !value.is_empty()).ok_or_else(|| {
            ServiceError::new(
                ErrorCode::Unauthenticated,
                format!("missing {PROJECT_HEADER} metadata: every call must name the project it acts for"),
            )
        })?;
        let project_id = ProjectId::parse(project)?;
        let user_id = text(USER_HEADER).unwrap_or_default().to_owned();
        let roles = text(ROLES_HEADER)
            .map(|roles| {
                roles.split(',').map(|role| role.trim().to_ascii_lowercase()).filter(|role| !role.is_empty()).collect()
            })
            .unwrap_or_default();
        let is_admin_project = text(ADMIN_PROJECT_HEADER).is_none_or(|value| !value.eq_ignore_ascii_case("false"));
        let request_id = match text(REQUEST_ID_HEADER) {
            Some(id) if is_request_id(id) => id.to_owned(),
            _ => new_request_id(),
        };
        Ok(Self::judged(project_id, user_id, roles, is_admin_project, policy, request_id))
    }

    /// Wraps a message in a request that carries this context.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.write_to(request.metadata_mut());
        request
    }

    fn write_to(&self, metadata: &mut MetadataMap) {
        // Ids are validated to a header-safe alphabet, so these conversions cannot fail for them;
        // a role that is not header-safe is left out (it could not have come from Keystone).
        if let Ok(value) = MetadataValue::try_from(self.project_id.as_str()) {
            metadata.insert(PROJECT_HEADER, value);
        }
        if let Ok(value) = MetadataValue::try_from(self.user_id.as_str()) {
            metadata.insert(USER_HEADER, value);
        }
        if let Ok(value) = MetadataValue::try_from(self.roles.join(",")) {
            metadata.insert(ROLES_HEADER, value);
        }
        if !self.is_admin_project {
            metadata.insert(ADMIN_PROJECT_HEADER, MetadataValue::from_static("false"));
        }
        if let Ok(value) = MetadataValue::try_from(self.request_id.as_str()) {
            metadata.insert(REQUEST_ID_HEADER, value);
        }
    }

    fn credentials(&self) -> Credentials<'_> {
        Credentials {
            project_id: self.project_id.as_str(),
            user_id: &self.user_id,
            roles: &self.roles,
            is_admin: self.is_admin,
            is_admin_project: self.is_admin_project,
            system_scope: None,
        }
    }

    fn allows(&self, rule: &str) -> bool {
        let target = Target { project_id: self.project_id.as_str(), user_id: &self.user_id };
        self.policy.allows(rule, &self.credentials(), &target)
    }

    /// Checks a policy rule (Cinder's name) for an action on the caller's own project: every
    /// query is scoped to that project, so the target is always the caller's.
    pub fn authorize(&self, rule: &str) -> Result<(), ServiceError> {
        let target = Target { project_id: self.project_id.as_str(), user_id: &self.user_id };
        self.policy.enforce(rule, &self.credentials(), &target)
    }

    /// For what Cinder decides by `context.is_admin` rather than a named rule (seeing every
    /// project's rows).
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
        let context =
            CallContext::new(ProjectId::parse("0123456789abcdef0123456789abcdef").unwrap(), "u1", ADMIN_ROLES);
        let request = context.request(());
        assert_eq!(CallContext::from_metadata(request.metadata(), Policy::defaults()).unwrap(), context);
        assert!(context.is_admin);
    }

    #[test]
    fn only_a_request_id_of_the_expected_form_is_taken() {
        let context =
            CallContext::new(ProjectId::parse("0123456789abcdef0123456789abcdef").unwrap(), "u1", MEMBER_ROLES);
        let id = new_request_id();
        assert_eq!(context.clone().for_request(&id).request_id, id);
        for hostile in ["", "req-", "req-not-a-uuid", "anything\nelse", &format!("{id}x")] {
            let kept = context.clone().for_request(hostile);
            assert_eq!(kept.request_id, context.request_id, "{hostile:?}");
        }
    }

    #[test]
    fn missing_project_is_unauthenticated() {
        let error = CallContext::from_metadata(&MetadataMap::new(), Policy::defaults()).unwrap_err();
        assert_eq!(error.code, ErrorCode::Unauthenticated);
    }

    #[test]
    fn roles_other_than_admin_are_not_admin() {
        let mut metadata = MetadataMap::new();
        metadata.insert(PROJECT_HEADER, "0123456789abcdef0123456789abcdef".parse().unwrap());
        metadata.insert(ROLES_HEADER, "member, reader".parse().unwrap());
        let context = CallContext::from_metadata(&metadata, Policy::defaults()).unwrap();
        assert!(!context.is_admin);
        assert_eq!(context.roles, ["member", "reader"]);
        assert_eq!(context.require_admin("reset status").unwrap_err().code, ErrorCode::Forbidden);
        assert_eq!(
            context.authorize("volume_extension:volume_admin_actions:reset_status").unwrap_err().code,
            ErrorCode::Forbidden
        );
        context.authorize("volume:create").unwrap();
    }
}
