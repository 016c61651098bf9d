//! The one way the node runs external commands (tgtadm, and later lvm, mount): with a timeout,
//! with stderr in the error, and never with the arguments in logs or errors, since some carry
//! secrets (CHAP passwords). Drivers take a [`Runner`], so their unit tests replay recorded real
//! output instead of running the tool.

use std::{process::Stdio, time::Duration};

use basalt::{ErrorCode, ServiceError};

/// A finished command: its exit code and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

pub trait Runner: Send + Sync + 'static {
    /// Runs `program` with `args`; `Err` only when it could not run or timed out.
    fn run(&self, program: &str, args: &[String]) -> impl Future<Output = Result<Finished, ServiceError>> + Send;
}

/// Runs commands on this host.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    pub timeout: Duration,
}

impl Default for SystemRunner {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30) }
    }
}

impl Runner for SystemRunner {
    async fn run(&self, program: &str, args: &[String]) -> Result<Finished, ServiceError> {
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| ServiceError::unavailable(format!("cannot run {program}: {error}")))?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                ServiceError::new(
                    ErrorCode::Timeout,
                    format!("{program} did not finish within {}s", self.timeout.as_secs()),
                )
            })?
            .map_err(|error| ServiceError::internal(format!("{program} failed to run: {error}")))?;
        Ok(Finished {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
pub mod recorded {
    //! Replays recorded real command output in unit tests.

    use std::sync::Mutex;

    use super::*;

    /// Answers each call with the next recorded reply whose argument fragment matches.
    pub struct RecordedRunner {
        replies: Mutex<Vec<(String, Finished)>>,
        pub calls: Mutex<Vec<String>>,
    }

    impl RecordedRunner {
        pub fn new(replies: Vec<(&str, Finished)>) -> Self {
            Self {
                replies: Mutex::new(
                    replies.into_iter().map(|(fragment, reply)| (fragment.to_owned(), reply)).collect(),
                ),
                calls: Mutex::new(Vec::new()),
            }
        }
    }

    pub fn ok(stdout: &str) -> Finished {
        Finished { code: 0, stdout: stdout.into(), stderr: String::new() }
    }

    pub fn failed(code: i32, stderr: &str) -> Finished {
        Finished { code, stdout: String::new(), stderr: stderr.into() }
    }

    impl Runner for RecordedRunner {
        async fn run(&self, program: &str, args: &[String]) -> Result<Finished, ServiceError> {
            let line = format!("{program} {}", args.join(" "));
            self.calls.lock().unwrap().push(line.clone());
            let mut replies = self.replies.lock().unwrap();
            let position = replies
                .iter()
                .position(|(fragment, _)| line.contains(fragment.as_str()))
                .unwrap_or_else(|| panic!("no recorded reply for {line:?}"));
            Ok(replies.remove(position).1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_report_their_exit_and_output() {
        let runner = SystemRunner::default();
        let finished = runner.run("sh", &["-c".into(), "echo out; echo err >&2; exit 3".into()]).await.unwrap();
        assert_eq!(finished, Finished { code: 3, stdout: "out\n".into(), stderr: "err".into() });
    }

    #[tokio::test]
    async fn a_command_that_hangs_times_out() {
        let runner = SystemRunner { timeout: Duration::from_millis(200) };
        let error = runner.run("sleep", &["5".into()]).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Timeout);
    }

    #[tokio::test]
    async fn a_missing_program_is_unavailable() {
        let error = SystemRunner::default().run("basalt-no-such-tool", &[]).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Unavailable);
    }
}
