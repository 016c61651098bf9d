//! Token validation against Keystone v3, as keystonemiddleware's auth_token does it: the gateway
//! holds its own service token (the service user's password, project scoped) and asks
//! `GET /v3/auth/tokens` about each user token (`X-Subject-Token`). A 404 means the token is not
//! valid (unknown, expired or revoked): 401 with `WWW-Authenticate: Keystone uri=...`. Good
//! answers are cached for the cache time, never past the token's own expiry; a cache time of 0
//! asks Keystone every time, so a revocation counts at once.
//!
//! An `X-Service-Token` is validated the same way and must carry one of the service roles; with
//! it, a user token that has just expired is still accepted (Keystone's `allow_expired`), so that
//! long operations a service started on a user's behalf can finish.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, StatusCode};
use basalt::{ServiceError, context::CallContext, ids::ProjectId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::fault::Fault;

/// Cached identities at most; when full, the entries closest to expiry go first.
const CACHE_ENTRIES: usize = 10_000;
/// A service token is renewed this long before it expires.
const SERVICE_TOKEN_MARGIN: Duration = Duration::from_secs(120);
const KEYSTONE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct KeystoneConfig {
    /// Keystone's base URL, e.g. `http://keystone:5000` (a trailing `/v3` is accepted).
    pub url: String,
    pub service_user: String,
    pub service_password: String,
    pub service_project: String,
    /// The domain of the service user and of its project (Keystone's `Default` unless told).
    pub service_domain: String,
    /// How long a validated token is believed without asking Keystone again.
    pub token_cache_time: Duration,
    /// Roles one of which an `X-Service-Token` must carry.
    pub service_token_roles: Vec<String>,
}

impl std::fmt::Debug for KeystoneConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeystoneConfig")
            .field("url", &self.url)
            .field("service_user", &self.service_user)
            .field("service_project", &self.service_project)
            .field("service_domain", &self.service_domain)
            .field("token_cache_time", &self.token_cache_time)
            .finish_non_exhaustive()
    }
}

/// What a valid token says about its holder.
#[derive(Debug, Clone)]
struct Identity {
    user_id: String,
    project_id: Option<String>,
    roles: Vec<String>,
    is_admin_project: bool,
    expires: Instant,
}

pub struct Keystone {
    config: KeystoneConfig,
    base: String,
    http: reqwest::Client,
    service_token: tokio::sync::Mutex<Option<(String, Instant)>>,
    cache: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

enum Validation {
    Valid(Identity),
    Invalid,
}

impl Keystone {
    pub fn new(config: KeystoneConfig) -> Result<Self, ServiceError> {
        let base = config.url.trim_end_matches('/').trim_end_matches("/v3").to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ServiceError::invalid(format!("--keystone-url {base:?}: give an http:// or https:// URL")));
        }
        let http = reqwest::Client::builder()
            .timeout(KEYSTONE_TIMEOUT)
            .build()
            .map_err(|error| ServiceError::internal(format!("keystone client: {error}")))?;
        Ok(Self { config, base, http, service_token: tokio::sync::Mutex::new(None), cache: Mutex::new(HashMap::new()) })
    }

    fn unauthorized(&self) -> Fault {
        Fault::new(StatusCode::UNAUTHORIZED, "The request you have made requires authentication.")
            .with_www_authenticate(format!("Keystone uri=\"{}\"", self.base))
    }

    pub async fn authenticate(&self, headers: &HeaderMap, url_project: Option<&str>) -> Result<CallContext, Fault> {
        let user_token = super::header(headers, "x-auth-token").ok_or_else(|| self.unauthorized())?;
        let service_identity = match super::header(headers, "x-service-token") {
            Some(service_token) => Some(self.service_identity(service_token).await?),
            None => None,
        };
        let identity = match self.identity(user_token, false).await? {
            Validation::Valid(identity) => identity,
            Validation::Invalid if service_identity.is_some() => match self.identity(user_token, true).await? {
                Validation::Valid(identity) => identity,
                Validation::Invalid => return Err(self.unauthorized()),
            },
            Validation::Invalid => return Err(self.unauthorized()),
        };
        let Some(project) = identity.project_id.as_deref() else {
            return Err(if url_project.is_some() {
                Fault::bad_request(super::MALFORMED_URL)
            } else {
                Fault::forbidden("this call acts on a project: use a project-scoped token")
            });
        };
        if url_project.is_some_and(|url_project| url_project != project) {
            return Err(Fault::bad_request(super::MALFORMED_URL));
        }
        let project_id = ProjectId::parse(project).map_err(|error| Fault::bad_request(error.message))?;
        let roles: Vec<&str> = identity.roles.iter().map(String::as_str).collect();
        let mut context = CallContext::new(project_id, identity.user_id.clone(), &roles);
        if !identity.is_admin_project {
            context = context.outside_admin_project();
        }
        Ok(context)
    }

    async fn service_identity(&self, token: &str) -> Result<Identity, Fault> {
        match self.identity(token, false).await? {
            Validation::Valid(identity)
                if identity.roles.iter().any(|role| {
                    self.config.service_token_roles.iter().any(|wanted| wanted.eq_ignore_ascii_case(role))
                }) =>
            {
                Ok(identity)
            }
            _ => Err(self.unauthorized()),
        }
    }

    /// A token's identity, from the cache or from Keystone.
    async fn identity(&self, token: &str, allow_expired: bool) -> Result<Validation, Fault> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if !allow_expired
            && let Some((identity, until)) = self.cache.lock().expect("cache lock").get(&key)
            && *until > now
        {
            return Ok(Validation::Valid(identity.clone()));
        }
        let validation = self.validate(token, allow_expired).await?;
        if let Validation::Valid(identity) = &validation
            && !allow_expired
            && !self.config.token_cache_time.is_zero()
        {
            let until = (now + self.config.token_cache_time).min(identity.expires);
            let mut cache = self.cache.lock().expect("cache lock");
            if cache.len() >= CACHE_ENTRIES {
                cache.retain(|_, (_, until)| *until > now);
            }
            if cache.len() >= CACHE_ENTRIES
                && let Some(first) = cache.iter().min_by_key(|(_, (_, until))| *until).map(|(key, _)| *key)
            {
                cache.remove(&first);
            }
            cache.insert(key, (identity.clone(), until));
        }
        Ok(validation)
    }

    async fn validate(&self, token: &str, allow_expired: bool) -> Result<Validation, Fault> {
        for attempt in 0..2 {
            let service_token = self.service_token(attempt > 0).await?;
            let mut url = format!("{}/v3/auth/tokens?nocatalog", self.base);
            if allow_expired {
                url.push_str("&allow_expired=1");
            }
            let response = self
                .http
                .get(&url)
                .header("X-Auth-Token", service_token)
                .header("X-Subject-Token", token)
                .send()
                .await
                .map_err(|error| unreachable_keystone(&error))?;
            match response.status().as_u16() {
                200 => {
                    return parse_token(&json_body(response).await?).map(Validation::Valid);
                }
                404 => return Ok(Validation::Invalid),
                // Our own token expired or was revoked: get a new one, once.
                401 if attempt == 0 => continue,
                status => {
                    tracing::error!(
                        status,
                        "keystone refused to validate a token with the service token; check the service user's roles"
                    );
                    return Err(Fault::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the identity service refused the gateway; retry later",
                    ));
                }
            }
        }
        Err(Fault::new(StatusCode::SERVICE_UNAVAILABLE, "the identity service refused the gateway's credentials"))
    }

    /// The gateway's own token, issued for the service user and renewed before it expires.
    async fn service_token(&self, renew: bool) -> Result<String, Fault> {
        let mut held = self.service_token.lock().await;
        if !renew
            && let Some((token, until)) = held.as_ref()
            && *until > Instant::now()
        {
            return Ok(token.clone());
        }
        let config = &self.config;
        let domain = json!({ "name": config.service_domain });
        let body = json!({ "auth": {
            "identity": { "methods": ["password"], "password": { "user": {
                "name": config.service_user, "domain": domain, "password": config.service_password } } },
            "scope": { "project": { "name": config.service_project, "domain": domain } },
        } });
        let response = self
            .http
            .post(format!("{}/v3/auth/tokens?nocatalog", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|error| unreachable_keystone(&error))?;
        if response.status() != reqwest::StatusCode::CREATED {
            tracing::error!(status = response.status().as_u16(), user = %config.service_user, "keystone refused the gateway's service user");
            return Err(Fault::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the identity service refused the gateway's credentials",
            ));
        }
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Fault::new(StatusCode::SERVICE_UNAVAILABLE, "the identity service issued no token"))?;
        let body = json_body(response).await?;
        let expires = expiry(&body).unwrap_or_else(Instant::now);
        let until = expires.checked_sub(SERVICE_TOKEN_MARGIN).unwrap_or(expires);
        *held = Some((token.clone(), until));
        Ok(token)
    }
}

fn unreachable_keystone(error: &reqwest::Error) -> Fault {
    // reqwest's errors carry the URL only, never a header, so the token cannot leak here.
    tracing::warn!(%error, "keystone unreachable");
    Fault::new(StatusCode::SERVICE_UNAVAILABLE, "the identity service is unreachable; retry shortly")
}

async fn json_body(response: reqwest::Response) -> Result<Value, Fault> {
    let bytes = response.bytes().await.map_err(|error| unreachable_keystone(&error))?;
    serde_json::from_slice(&bytes).map_err(|_| {
        Fault::new(StatusCode::SERVICE_UNAVAILABLE, "the identity service answered with something that is not JSON")
    })
}

/// When the token in a Keystone token body expires, on this process's clock.
fn expiry(body: &Value) -> Option<Instant> {
    let text = body["token"]["expires_at"].as_str()?;
    let at = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let left = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default();
    Some(Instant::now() + left)
}

fn parse_token(body: &Value) -> Result<Identity, Fault> {
    let token = &body["token"];
    let malformed =
        || Fault::new(StatusCode::SERVICE_UNAVAILABLE, "the identity service answered with a malformed token");
    let user_id = token["user"]["id"].as_str().ok_or_else(malformed)?.to_owned();
    let roles = token["roles"]
        .as_array()
        .map(|roles| roles.iter().filter_map(|role| role["name"].as_str()).map(str::to_ascii_lowercase).collect())
        .unwrap_or_default();
    Ok(Identity {
        user_id,
        project_id: token["project"]["id"].as_str().map(str::to_owned),
        roles,
        // Keystone says so only when it has an admin project configured and this is not it.
        is_admin_project: token["is_admin_project"].as_bool().unwrap_or(true),
        expires: expiry(body).ok_or_else(malformed)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bodies_give_user_project_roles_and_expiry() {
        let at = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
        let body = json!({ "token": {
            "user": { "id": "u1", "name": "alice", "domain": { "id": "default" } },
            "project": { "id": "0123456789abcdef0123456789abcdef", "domain": { "id": "default" } },
            "roles": [{ "id": "r1", "name": "Member" }, { "id": "r2", "name": "reader" }],
            "expires_at": at,
        } });
        let identity = parse_token(&body).unwrap();
        assert_eq!(identity.roles, ["member", "reader"]);
        assert!(identity.is_admin_project);
        assert!(identity.expires > Instant::now() + Duration::from_secs(200));
        let system =
            json!({ "token": { "user": { "id": "u" }, "system": { "all": true }, "roles": [], "expires_at": at } });
        assert_eq!(parse_token(&system).unwrap().project_id, None);
        assert!(parse_token(&json!({ "token": { "user": { "id": "u" } } })).is_err());
    }
}
