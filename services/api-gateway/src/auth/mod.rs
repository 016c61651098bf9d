//! Who is calling. Two modes:
//!
//! - **Keystone** (`--auth keystone`): `X-Auth-Token` is validated with Keystone as
//!   keystonemiddleware's auth_token does (see `keystone.rs`); user, project and roles come from
//!   the token only, never from identity headers a client sends.
//! - **noauth** (the development default, Cinder's noauth): a token `user:project` names both
//!   (users the operator lists with `--admin-user` are admins, the others project members); any
//!   other token (keystoneauth's `none` plugin sends `notused`) acts as an admin of the URL's
//!   project, as Cinder's noauth does, so the OpenStack SDK works unchanged.
//!
//! Either way the project in the URL must be the token's, or Cinder's 400 "Malformed request
//! url". Tokens are never logged or echoed.

mod keystone;

use axum::http::{HeaderMap, StatusCode};
use basalt::{
    context::{ADMIN_ROLES, CallContext, MEMBER_ROLES},
    ids::ProjectId,
};

use self::keystone::Keystone;
pub use self::keystone::KeystoneConfig;
use crate::fault::Fault;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// noauth: users (the `user` of a `user:project` token) who are admins.
    pub admin_users: Vec<String>,
    /// noauth: the project of calls whose token and URL name none.
    pub default_project: Option<String>,
    /// Validate tokens with Keystone; noauth when `None`.
    pub keystone: Option<KeystoneConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { admin_users: vec!["admin".into()], default_project: None, keystone: None }
    }
}

/// The gateway's authenticator, built once from its configuration.
pub struct Authenticator {
    config: AuthConfig,
    keystone: Option<Keystone>,
}

const MALFORMED_URL: &str = "Malformed request url: the project in the url is not the token's project";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim).filter(|value| !value.is_empty())
}

impl Authenticator {
    pub fn new(mut config: AuthConfig) -> Result<Self, basalt::ServiceError> {
        // The Keystone settings (with the service password) are held once, by the validator.
        let keystone = config.keystone.take().map(Keystone::new).transpose()?;
        Ok(Self { config, keystone })
    }

    pub async fn authenticate(&self, headers: &HeaderMap, url_project: Option<&str>) -> Result<CallContext, Fault> {
        match &self.keystone {
            Some(keystone) => keystone.authenticate(headers, url_project).await,
            None => self.noauth(headers, url_project),
        }
    }

    fn noauth(&self, headers: &HeaderMap, url_project: Option<&str>) -> Result<CallContext, Fault> {
        let Some(token) = header(headers, "x-auth-token") else {
            return Err(Fault::new(
                StatusCode::UNAUTHORIZED,
                "authentication required: send X-Auth-Token as <user>:<project> (noauth)",
            ));
        };
        let (user, project, roles) = match token.split_once(':') {
            Some((user, project)) if !user.is_empty() && !project.is_empty() => {
                if url_project.is_some_and(|url_project| url_project != project) {
                    return Err(Fault::bad_request(MALFORMED_URL));
                }
                let roles =
                    if self.config.admin_users.iter().any(|admin| admin == user) { ADMIN_ROLES } else { MEMBER_ROLES };
                (user, project.to_owned(), roles)
            }
            _ => {
                let project = url_project
                    .map(str::to_owned)
                    .or_else(|| header(headers, "x-project-id").map(str::to_owned))
                    .or_else(|| self.config.default_project.clone())
                    .ok_or_else(|| {
                        Fault::bad_request(
                            "no project: put it in the url (/v3/<project>/...), the token (<user>:<project>) or X-Project-Id",
                        )
                    })?;
                ("noauth", project, ADMIN_ROLES)
            }
        };
        let project_id = ProjectId::parse(&project).map_err(|error| Fault::bad_request(error.message))?;
        Ok(CallContext::new(project_id, user, roles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    fn noauth() -> Authenticator {
        Authenticator::new(AuthConfig::default()).unwrap()
    }

    #[tokio::test]
    async fn user_project_tokens_must_match_the_url() {
        let auth = noauth();
        let admin = auth
            .authenticate(&headers(&[("x-auth-token", "admin:0123456789abcdef0123456789abcdef")]), Some(A))
            .await
            .unwrap();
        assert_eq!((admin.project_id.as_str(), admin.is_admin), (A, true));
        let mismatch = auth
            .authenticate(&headers(&[("x-auth-token", "admin:0123456789abcdef0123456789abcdef")]), Some(B))
            .await
            .unwrap_err();
        assert_eq!(mismatch.status, 400);
        let member = auth
            .authenticate(&headers(&[("x-auth-token", "alice:0123456789abcdef0123456789abcdef")]), None)
            .await
            .unwrap();
        assert!(!member.is_admin);
        assert_eq!(member.roles, ["member", "reader"]);
    }

    #[tokio::test]
    async fn opaque_tokens_act_as_admin_of_the_url_project_and_identity_headers_count_for_nothing() {
        let auth = noauth();
        let from_url = auth
            .authenticate(
                &headers(&[("x-auth-token", "notused"), ("x-user-id", "mallory"), ("x-roles", "reader")]),
                Some(A),
            )
            .await
            .unwrap();
        assert_eq!((from_url.project_id.as_str(), from_url.is_admin, from_url.user_id.as_str()), (A, true, "noauth"));
        let from_header =
            auth.authenticate(&headers(&[("x-auth-token", "notused"), ("x-project-id", B)]), None).await.unwrap();
        assert_eq!(from_header.project_id.as_str(), B);
        assert_eq!(auth.authenticate(&headers(&[("x-auth-token", "notused")]), None).await.unwrap_err().status, 400);
        assert_eq!(auth.authenticate(&HeaderMap::new(), Some(A)).await.unwrap_err().status, 401);
        let member = auth
            .authenticate(
                &headers(&[("x-auth-token", "alice:0123456789abcdef0123456789abcdef"), ("x-user-id", "admin")]),
                None,
            )
            .await
            .unwrap();
        assert!(!member.is_admin, "X-User-Id does not make a caller admin");
    }
}
