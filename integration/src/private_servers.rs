//! A PostgreSQL cluster and a NATS server private to one run, which it may crash and restart
//! without disturbing the machine's shared ones (other tests run against those meanwhile).

use std::{
    ffi::OsString,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};

use crate::{WAIT, free_port};

/// A PostgreSQL cluster in a temporary directory on a free loopback port, stopped when dropped.
pub struct PostgresServer {
    dir: tempfile::TempDir,
    port: u16,
}

impl PostgresServer {
    /// `initdb` and start; the URL of its `basalt` database is [`PostgresServer::url`].
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        if running_as_root() {
            // PostgreSQL refuses to run as root: the cluster belongs to the `postgres` user.
            let status = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status()?;
            ensure!(status.success(), "cannot give {} to the postgres user", dir.path().display());
        }
        let server = Self { dir, port: free_port()? };
        let data = server.data_dir();
        server.run("initdb", &["-A", "trust", "-U", "postgres", "--no-sync", "-D", &data])?;
        server.start_server()?;
        server.run("createdb", &["-h", "127.0.0.1", "-U", "postgres", "-p", &server.port.to_string(), "basalt"])?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/basalt", self.port)
    }

    /// Stops the server as a crash would (`-m immediate`: no checkpoint, clients cut off), waits
    /// `down`, and starts it again; it recovers from its write-ahead log.
    pub fn crash_and_restart(&self, down: Duration) -> Result<()> {
        self.stop()?;
        std::thread::sleep(down);
        self.start_server()
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start_server(&self) -> Result<()> {
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.dir.path().display());
        let log = self.dir.path().join("server.log").display().to_string();
        let wait = WAIT.as_secs().to_string();
        self.run("pg_ctl", &["-w", "-t", &wait, "-o", &options, "-l", &log, "-D", &self.data_dir(), "start"])
    }

    fn stop(&self) -> Result<()> {
        self.run("pg_ctl", &["-m", "immediate", "-D", &self.data_dir(), "stop"])
    }

    /// Runs a PostgreSQL tool as the cluster's owner.
    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let program = postgres_tool(tool)?;
        let mut command = if running_as_root() {
            let mut as_owner = Command::new("runuser");
            as_owner.args(["-u", "postgres", "--"]).arg(program);
            as_owner
        } else {
            Command::new(program)
        };
        let output = command.args(args).current_dir(self.dir.path()).stdin(Stdio::null()).output()?;
        ensure!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A PostgreSQL program: on the PATH, or in Debian's versioned folder.
fn postgres_tool(name: &str) -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.exists());
    if let Some(found) = on_path {
        return Ok(found);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|entry| Some(entry.ok()?.path().join("bin").join(name))).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|found| found.exists())
        .with_context(|| format!("PostgreSQL's {name} is required (Debian's postgresql)"))
}

/// A NATS server on a free loopback port, killed when dropped.
pub struct NatsServer {
    child: Child,
    port: u16,
    /// Its own flags (credentials, TLS), kept for restarts.
    flags: Vec<OsString>,
}

impl NatsServer {
    pub fn start() -> Result<Self> {
        Self::start_with(Vec::new())
    }

    /// A server with `flags` besides its address and port.
    pub fn start_with(flags: Vec<OsString>) -> Result<Self> {
        let port = free_port()?;
        Ok(Self { child: Self::spawn(port, &flags)?, port, flags })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server, waits `down`, and starts it again on its port; clients reconnect.
    pub fn kill_and_restart(&mut self, down: Duration) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = Self::spawn(self.port, &self.flags)?;
        Ok(())
    }

    fn spawn(port: u16, flags: &[OsString]) -> Result<Child> {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nats-server is required (Debian's nats-server)")?;
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("nats-server did not come up on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(child)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
