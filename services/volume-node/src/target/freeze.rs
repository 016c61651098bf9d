//! Holding a target daemon's writers still, so that copies of several volumes (a group snapshot, a
//! group cloned from another) are cut at one point in time.
//!
//! tgtd serves every LUN from userspace: its worker threads read and write the backing file or
//! device with synchronous calls (the `rdwr` backing store, opened `O_DIRECT`, that Basalt's LUNs
//! use). Stopped with SIGSTOP, a thread stops when its current call returns; once every thread of
//! tgtd shows stopped, no write is in flight and none starts until SIGCONT. The volumes then hold
//! exactly the writes tgtd completed, which include every write an initiator saw acknowledged: a
//! write that depends on another (issued after the other's acknowledgement) is never in a copy
//! without the one it depends on. Initiators see a pause, not an error.
//!
//! The cost is that every LUN of the daemon pauses, not only the set's, for as long as the copies
//! take; `limit` bounds it. A watchdog process outside this one sends SIGCONT at the limit whatever
//! becomes of the node, so a node killed mid-freeze never leaves tgtd stopped; the caller treats
//! copies that took longer than the limit as not consistent.

use std::{
    fs,
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use basalt::ServiceError;

/// How often the stop of every thread is checked while waiting for it.
const STOP_POLL: Duration = Duration::from_millis(1);

/// A stopped daemon; resumed by [`Frozen::thaw`], or on drop.
#[derive(Debug)]
pub struct Frozen {
    pid: i32,
    watchdog: Option<Child>,
    since: Instant,
    limit: Duration,
}

impl Frozen {
    /// Stops process `pid` (every thread) and returns once none of its threads is running.
    pub fn stop(pid: i32, limit: Duration) -> Result<Self, ServiceError> {
        if pid <= 1 {
            return Err(ServiceError::internal(format!("refusing to stop process {pid}")));
        }
        // Armed before the stop: whatever happens from here on, the daemon runs again at the limit.
        let watchdog = Command::new("sh")
            .args(["-c", &format!("sleep {}; kill -CONT {pid}", limit.as_secs_f64())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|error| ServiceError::internal(format!("cannot start the freeze watchdog: {error}")))?;
        let since = Instant::now();
        let frozen = Self { pid, watchdog: Some(watchdog), since, limit };
        // SAFETY: a signal to a process id, no memory involved.
        if unsafe { libc::kill(pid, libc::SIGSTOP) } != 0 {
            let error = std::io::Error::last_os_error();
            return Err(ServiceError::internal(format!("cannot stop the target daemon (pid {pid}): {error}")));
        }
        loop {
            if all_stopped(pid)? {
                return Ok(frozen);
            }
            if since.elapsed() >= limit {
                return Err(ServiceError::conflict(format!(
                    "the target daemon's writers did not stop within the {} s freeze limit",
                    limit.as_secs_f64()
                )));
            }
            std::thread::sleep(STOP_POLL);
        }
    }

    /// Resumes the daemon; `Err` when the freeze lasted past its limit, so the watchdog may have
    /// resumed it before the copies were done.
    pub fn thaw(mut self) -> Result<(), ServiceError> {
        self.resume();
        let held = self.since.elapsed();
        if held >= self.limit {
            return Err(ServiceError::conflict(format!(
                "the copies took {:.1} s, longer than the {} s the writers may be held still; raise --freeze-limit-secs or detach the volumes",
                held.as_secs_f64(),
                self.limit.as_secs_f64()
            )));
        }
        Ok(())
    }

    fn resume(&mut self) {
        // SAFETY: a signal to a process id, no memory involved.
        if unsafe { libc::kill(self.pid, libc::SIGCONT) } != 0 {
            let error = std::io::Error::last_os_error();
            tracing::error!(pid = self.pid, %error, "cannot resume the target daemon; its watchdog will");
            return;
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            // The whole group: the shell and its sleep.
            // SAFETY: a signal to the watchdog's own process group.
            unsafe { libc::kill(-(watchdog.id() as i32), libc::SIGKILL) };
            let _ = watchdog.wait();
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            self.resume();
        }
    }
}

/// Whether every thread of `pid` is stopped (state `T`, or `t` under a tracer).
fn all_stopped(pid: i32) -> Result<bool, ServiceError> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|error| ServiceError::internal(format!("cannot list the threads of process {pid}: {error}")))?;
    for task in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else { continue };
        // The state follows the command name, which is in parentheses and may hold anything.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        if !matches!(state, Some('T' | 't')) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real process with several threads stands in for tgtd: stopped, every thread shows it; on
    /// thaw (or when its watchdog fires) it runs again.
    #[test]
    fn a_frozen_process_stops_every_thread_and_runs_again_after_the_thaw() {
        let threads =
            "import threading, time\nfor _ in range(3): threading.Thread(target=time.sleep, args=(30,)).start()";
        let mut child =
            Command::new("python3").args(["-c", threads]).stdout(Stdio::null()).spawn().expect("python3 runs");
        let pid = child.id() as i32;
        while fs::read_dir(format!("/proc/{pid}/task")).unwrap().count() < 4 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let frozen = Frozen::stop(pid, Duration::from_secs(30)).expect("stops");
        assert!(all_stopped(pid).unwrap());
        frozen.thaw().expect("within the limit");
        assert!(!all_stopped(pid).unwrap(), "running again");

        // Held past its limit: the watchdog resumes it, and the thaw says the copies are suspect.
        let frozen = Frozen::stop(pid, Duration::from_millis(200)).expect("stops");
        while all_stopped(pid).unwrap() {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(frozen.thaw().is_err());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
