//! Who is calling, from Cinder's noauth token forms. A token `user:project` names both (and the
//! project in the URL must match it, or Cinder answers 400 "Malformed request url"). Any other
//! token (keystoneauth's `none` plugin sends `notused`) takes the project from the URL, then the
//! `X-Project-Id` header, then the gateway's default project. Admins are the users the operator
//! lists (`--admin-user`, default `admin`). Tokens are never logged or echoed.

use axum::http::HeaderMap;
use basalt::{context::CallContext, ids::ProjectId};

use crate::fault::Fault;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub admin_users: Vec<String>,
    /// The project of calls whose token and URL name none.
    pub default_project: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { admin_users: vec!["admin".into()], default_project: None }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim).filter(|value| !value.is_empty())
}

pub fn authenticate(headers: &HeaderMap, url_project: Option<&str>, config: &AuthConfig) -> Result<CallContext, Fault> {
    let Some(token) = header(headers, "x-auth-token") else {
        return Err(Fault::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "authentication required: send X-Auth-Token as <user>:<project> (noauth)",
        ));
    };
    let (user, project) = match token.split_once(':') {
        Some((user, project)) if !user.is_empty() && !project.is_empty() => {
            if url_project.is_some_and(|url_project| url_project != project) {
                return Err(Fault::bad_request(
                    "malformed request url: the project in the url is not the token's project",
                ));
            }
            (user.to_owned(), project.to_owned())
        }
        _ => {
            let project = url_project
                .map(str::to_owned)
                .or_else(|| header(headers, "x-project-id").map(str::to_owned))
                .or_else(|| config.default_project.clone())
                .ok_or_else(|| {
                    Fault::bad_request("no project: put it in the url (/v3/<project>/...), the token (<user>:<project>) or X-Project-Id")
                })?;
            let user = header(headers, "x-user-id").unwrap_or("anonymous").to_owned();
            (user, project)
        }
    };
    let project_id = ProjectId::parse(&project).map_err(|error| Fault::bad_request(error.message))?;
    let is_admin = config.admin_users.contains(&user);
    Ok(CallContext::new(project_id, user, is_admin))
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

    #[test]
    fn user_project_tokens_must_match_the_url() {
        let config = AuthConfig::default();
        let context =
            authenticate(&headers(&[("x-auth-token", "admin:0123456789abcdef0123456789abcdef")]), Some(A), &config)
                .unwrap();
        assert_eq!((context.project_id.as_str(), context.is_admin), (A, true));
        let mismatch =
            authenticate(&headers(&[("x-auth-token", "admin:0123456789abcdef0123456789abcdef")]), Some(B), &config)
                .unwrap_err();
        assert_eq!(mismatch.status, 400);
        let member =
            authenticate(&headers(&[("x-auth-token", "alice:0123456789abcdef0123456789abcdef")]), None, &config)
                .unwrap();
        assert!(!member.is_admin);
    }

    #[test]
    fn opaque_tokens_take_the_project_from_the_url_then_the_header() {
        let config = AuthConfig::default();
        let from_url = authenticate(&headers(&[("x-auth-token", "notused")]), Some(A), &config).unwrap();
        assert_eq!(from_url.project_id.as_str(), A);
        let from_header =
            authenticate(&headers(&[("x-auth-token", "notused"), ("x-project-id", B)]), None, &config).unwrap();
        assert_eq!(from_header.project_id.as_str(), B);
        assert_eq!(authenticate(&headers(&[("x-auth-token", "notused")]), None, &config).unwrap_err().status, 400);
        assert_eq!(authenticate(&HeaderMap::new(), Some(A), &config).unwrap_err().status, 401);
    }
}
