//! A real Keystone for the tests: keystone 2025.2 from PyPI (the frozen lock in
//! `integration/clients/openstack/`), SQLite in WAL mode (without it the second role assignment
//! fails with "database is locked"), fernet tokens, served by gunicorn on a free port. Started
//! and bootstrapped in about 15 s; stopped (its process group killed) when dropped.

use std::{
    collections::HashMap,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::{free_port, python_with, repo_root};

const ADMIN_PASSWORD: &str = "keystone-admin-secret";

pub struct Keystone {
    pub url: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
    server: Child,
    http: reqwest::Client,
    admin_token: String,
    roles: HashMap<String, String>,
}

/// A user with a password, for password authentication.
#[derive(Debug, Clone)]
pub struct KeystoneUser {
    pub name: String,
    pub password: String,
}

fn write_config(dir: &Path, expiration_secs: u64) -> Result<PathBuf> {
    let etc = dir.join(format!("etc-{expiration_secs}"));
    std::fs::create_dir_all(&etc)?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        etc.join("keystone.conf"),
        format!(
            "[DEFAULT]\nlog_file = {data}/keystone-{expiration_secs}.log\n\
             [database]\nconnection = sqlite:///{data}/keystone.sqlite\n\
             [token]\nprovider = fernet\nexpiration = {expiration_secs}\n\
             [fernet_tokens]\nkey_repository = {data}/fernet-keys/\n\
             [fernet_receipts]\nkey_repository = {data}/fernet-keys/\n\
             [credential]\nkey_repository = {data}/credential-keys/\n\
             [identity]\npassword_hash_rounds = 4\n",
            data = data.display()
        ),
    )?;
    Ok(etc)
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command.output().with_context(|| format!("cannot run {what}"))?;
    ensure!(output.status.success(), "{what} failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// gunicorn serving Keystone with the configuration in `etc`, in its own process group.
fn serve(bin: &Path, dir: &Path, etc: &Path, port: u16) -> Result<Child> {
    // Keystone's oslo.config parses sys.argv, which is gunicorn's: the shim hides it.
    let shim = dir.join("shim");
    std::fs::create_dir_all(&shim)?;
    std::fs::write(
        shim.join("ks_wsgi.py"),
        "import sys\nsys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application  # noqa: E402,F401\n",
    )?;
    let log = std::fs::File::create(dir.join(format!("gunicorn-{port}.log")))?;
    Command::new(bin.join("gunicorn"))
        .args(["--chdir"])
        .arg(&shim)
        .args(["-b", &format!("127.0.0.1:{port}"), "-w", "1", "ks_wsgi:application"])
        .env("OS_KEYSTONE_CONFIG_DIR", etc)
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start gunicorn")
}

fn stop(server: &mut Child) {
    // gunicorn's worker is in the same group: the whole group goes.
    unsafe {
        libc::kill(-(server.id() as i32), libc::SIGKILL);
    }
    let _ = server.wait();
}

async fn wait_until_serving(http: &reqwest::Client, url: &str, server: &mut Child) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("{url}/v3")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if let Some(status) = server.try_wait()? {
            bail!("keystone exited during start ({status})");
        }
        if std::time::Instant::now() > deadline {
            bail!("keystone did not answer at {url} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn issue_token(http: &reqwest::Client, url: &str, user: &str, password: &str, project: Value) -> Result<String> {
    let body = json!({ "auth": {
        "identity": { "methods": ["password"], "password": { "user": {
            "name": user, "domain": { "id": "default" }, "password": password } } },
        "scope": { "project": project },
    } });
    let response = http
        .post(format!("{url}/v3/auth/tokens?nocatalog"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await?;
    ensure!(response.status() == reqwest::StatusCode::CREATED, "token for {user}: {}", response.status());
    Ok(response.headers().get("x-subject-token").context("no X-Subject-Token")?.to_str()?.to_owned())
}

impl Keystone {
    pub async fn start() -> Result<Self> {
        let lock = repo_root().join("integration/clients/openstack/glance-keystone-2025.2.txt");
        let lock = lock.to_str().context("utf-8 path")?.to_owned();
        let python = python_with("openstack-2025.2", &["-r", &lock], "keystone, gunicorn")?;
        let bin = python.parent().context("venv bin")?.to_path_buf();
        let dir = tempfile::tempdir()?;
        let etc = write_config(dir.path(), 3600)?;
        let manage = |args: &[&str]| {
            let mut command = Command::new(bin.join("keystone-manage"));
            command.arg("--config-file").arg(etc.join("keystone.conf")).args(args);
            run(&mut command, &format!("keystone-manage {}", args[0]))
        };
        manage(&["db_sync"])?;
        let database = dir.path().join("data/keystone.sqlite");
        run(
            Command::new(&python)
                .args(["-c", "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('pragma journal_mode=wal')"])
                .arg(&database),
            "setting WAL mode",
        )?;
        manage(&["fernet_setup", "--keystone-user", "root", "--keystone-group", "root"])?;
        manage(&["credential_setup", "--keystone-user", "root", "--keystone-group", "root"])?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let endpoint = format!("{url}/v3/");
        manage(&[
            "bootstrap",
            "--bootstrap-password",
            ADMIN_PASSWORD,
            "--bootstrap-region-id",
            "RegionOne",
            "--bootstrap-public-url",
            &endpoint,
            "--bootstrap-internal-url",
            &endpoint,
            "--bootstrap-admin-url",
            &endpoint,
        ])?;
        let mut server = serve(&bin, dir.path(), &etc, port)?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        if let Err(error) = wait_until_serving(&http, &url, &mut server).await {
            stop(&mut server);
            return Err(error);
        }
        let admin_project = json!({ "name": "admin", "domain": { "id": "default" } });
        let admin_token = issue_token(&http, &url, "admin", ADMIN_PASSWORD, admin_project).await?;
        let mut keystone = Self { url, dir, bin, server, http, admin_token, roles: HashMap::new() };
        let roles = keystone.admin(reqwest::Method::GET, "/v3/roles", None).await?;
        for role in roles["roles"].as_array().context("roles")? {
            keystone.roles.insert(
                role["name"].as_str().context("role name")?.to_owned(),
                role["id"].as_str().context("role id")?.to_owned(),
            );
        }
        if !keystone.roles.contains_key("service") {
            let created = keystone
                .admin(reqwest::Method::POST, "/v3/roles", Some(json!({ "role": { "name": "service" } })))
                .await?;
            keystone.roles.insert("service".into(), created["role"]["id"].as_str().context("role id")?.to_owned());
        }
        Ok(keystone)
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut request =
            self.http.request(method.clone(), format!("{}{path}", self.url)).header("x-auth-token", &self.admin_token);
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "keystone {method} {path}: {status} {text}");
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }

    /// Creates a project; returns its id (32 hex digits, as Basalt's project ids are).
    pub async fn project(&self, name: &str) -> Result<String> {
        let created = self
            .admin(
                reqwest::Method::POST,
                "/v3/projects",
                Some(json!({ "project": { "name": name, "domain_id": "default" } })),
            )
            .await?;
        Ok(created["project"]["id"].as_str().context("project id")?.to_owned())
    }

    /// Creates a user with `roles` on `project`.
    pub async fn user(&self, name: &str, project_id: &str, roles: &[&str]) -> Result<KeystoneUser> {
        let password = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        let created = self
            .admin(
                reqwest::Method::POST,
                "/v3/users",
                Some(json!({ "user": { "name": name, "domain_id": "default", "password": password } })),
            )
            .await?;
        let user_id = created["user"]["id"].as_str().context("user id")?.to_owned();
        for role in roles {
            let role_id = self.roles.get(*role).with_context(|| format!("no role {role}"))?;
            self.admin(
                reqwest::Method::PUT,
                &format!("/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"),
                None,
            )
            .await?;
        }
        Ok(KeystoneUser { name: name.to_owned(), password })
    }

    /// A project-scoped token for `user`.
    pub async fn token(&self, user: &KeystoneUser, project_id: &str) -> Result<String> {
        issue_token(&self.http, &self.url, &user.name, &user.password, json!({ "id": project_id })).await
    }

    /// A token that has already expired: issued by a second Keystone on the same database and
    /// keys whose tokens live one second, then outlived.
    pub async fn expired_token(&self, user: &KeystoneUser, project_id: &str) -> Result<String> {
        let etc = write_config(self.dir.path(), 1)?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut server = serve(&self.bin, self.dir.path(), &etc, port)?;
        let issued = match wait_until_serving(&self.http, &url, &mut server).await {
            Ok(()) => issue_token(&self.http, &url, &user.name, &user.password, json!({ "id": project_id })).await,
            Err(error) => Err(error),
        };
        stop(&mut server);
        let token = issued?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(token)
    }

    /// Revokes a token (`DELETE /v3/auth/tokens`).
    pub async fn revoke(&self, token: &str) -> Result<()> {
        let response = self
            .http
            .delete(format!("{}/v3/auth/tokens", self.url))
            .header("x-auth-token", &self.admin_token)
            .header("x-subject-token", token)
            .send()
            .await?;
        ensure!(response.status() == reqwest::StatusCode::NO_CONTENT, "revoke: {}", response.status());
        Ok(())
    }

    /// Adds a service of `service_type` to the catalog with one public endpoint.
    pub async fn register_service(&self, service_type: &str, url: &str) -> Result<()> {
        let created = self
            .admin(
                reqwest::Method::POST,
                "/v3/services",
                Some(json!({ "service": { "type": service_type, "name": service_type } })),
            )
            .await?;
        let service_id = created["service"]["id"].as_str().context("service id")?;
        self.admin(
            reqwest::Method::POST,
            "/v3/endpoints",
            Some(json!({ "endpoint": { "service_id": service_id, "interface": "public", "url": url, "region_id": "RegionOne" } })),
        )
        .await?;
        Ok(())
    }

    /// The gateway's configuration for this Keystone, as the service user `user` of `project`.
    pub fn gateway_config(
        &self,
        user: &KeystoneUser,
        project: &str,
        cache: Duration,
    ) -> basalt_api_gateway::KeystoneConfig {
        basalt_api_gateway::KeystoneConfig {
            url: self.url.clone(),
            service_user: user.name.clone(),
            service_password: user.password.clone(),
            service_project: project.to_owned(),
            service_domain: "Default".into(),
            token_cache_time: cache,
            service_token_roles: vec!["service".into()],
        }
    }

    /// The `openstack`/`cinder` clients' environment for password authentication as `user`.
    pub fn client_env(&self, user: &KeystoneUser, project_id: &str) -> Vec<(String, String)> {
        [
            ("OS_AUTH_TYPE", "password"),
            ("OS_AUTH_URL", &format!("{}/v3", self.url)),
            ("OS_USERNAME", &user.name),
            ("OS_PASSWORD", &user.password),
            ("OS_PROJECT_ID", project_id),
            ("OS_USER_DOMAIN_ID", "default"),
            ("OS_IDENTITY_API_VERSION", "3"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
    }
}

impl Drop for Keystone {
    fn drop(&mut self) {
        stop(&mut self.server);
    }
}
