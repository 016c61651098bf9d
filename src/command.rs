//! The one way Basalt runs external commands (the node's tgtadm, targetcli, lvm and mount, the CSI
//! node's iscsiadm, losetup, mkfs and mount): with a timeout, with stderr in the error, and never
//! with the arguments in logs or errors, since some carry secrets (CHAP passwords). Drivers take a
//! [`Runner`], so their unit tests replay recorded real output instead of running the tool.

use std::{process::Stdio, time::Duration};

use crate::{ErrorCode, ServiceError};

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
    /// Runs `program` with `args` and, when given, `input` on its standard input; `Err` only when
    /// it could not run or timed out.
    fn run_with_input(
        &self,
        program: &str,
        args: &[String],
        input: Option<&str>,
    ) -> impl Future<Output = Result<Finished, ServiceError>> + Send;

    fn run(&self, program: &str, args: &[String]) -> impl Future<Output = Result<Finished, ServiceError>> + Send {
        self.run_with_input(program, args, None)
    }
}

/// Runs commands on this host.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    pub timeout: Duration,
    /// When set, every call is recorded there (the VM lane's recordings).
    pub transcript: Option<std::sync::Arc<Transcript>>,
}

impl Default for SystemRunner {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), transcript: None }
    }
}

impl Runner for SystemRunner {
    async fn run_with_input(
        &self,
        program: &str,
        args: &[String],
        input: Option<&str>,
    ) -> Result<Finished, ServiceError> {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| ServiceError::unavailable(format!("cannot run {program}: {error}")))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            // Dropping stdin afterwards closes it, so the program sees the end of its input.
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(|error| ServiceError::internal(format!("cannot write to {program}: {error}")))?;
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                ServiceError::new(
                    ErrorCode::Timeout,
                    format!("{program} did not finish within {}s", self.timeout.as_secs()),
                )
            })?
            .map_err(|error| ServiceError::internal(format!("{program} failed to run: {error}")))?;
        let finished = Finished {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        };
        if let Some(transcript) = &self.transcript {
            transcript.record(&RecordedCall {
                command: redact_secrets(&format!("{program} {}", args.join(" "))),
                input: input.map(redact_secrets),
                code: finished.code,
                stdout: redact_secrets(&finished.stdout),
                stderr: redact_secrets(&finished.stderr),
            })?;
        }
        Ok(finished)
    }
}

/// One call as the VM lane records it: real LVM, targetcli and mount output that the `_recorded`
/// unit tests replay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedCall {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Replaces CHAP passwords (`password=X`, `--password X`, targetcli's `password is now 'X'`) with
/// `<redacted>`, so recordings never hold a secret.
pub fn redact_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let markers = ["password=", "--password ", "password is now '"];
    while let Some((at, marker)) =
        markers.iter().filter_map(|marker| rest.find(marker).map(|at| (at, *marker))).min_by_key(|(at, _)| *at)
    {
        let value_start = at + marker.len();
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..];
        let end = value.find(|c: char| c.is_whitespace() || c == '\'').unwrap_or(value.len());
        out.push_str("<redacted>");
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Appends every call and its result to a file, one JSON line each.
#[derive(Debug)]
pub struct Transcript {
    file: std::sync::Mutex<std::fs::File>,
}

impl Transcript {
    pub fn create(path: &std::path::Path) -> Result<Self, ServiceError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| ServiceError::internal(format!("cannot open {}: {error}", path.display())))?;
        Ok(Self { file: std::sync::Mutex::new(file) })
    }

    fn record(&self, call: &RecordedCall) -> Result<(), ServiceError> {
        use std::io::Write;
        let mut line = serde_json::to_string(call).map_err(|error| ServiceError::internal(error.to_string()))?;
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(line.as_bytes())
            .map_err(|error| ServiceError::internal(format!("cannot record a command: {error}")))
    }
}

pub mod recorded {
    //! Replays recorded real command output in unit tests (of the node's drivers and the CSI node).

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

    /// The calls of a transcript the VM lane recorded (`tests/fixtures/recorded/*.jsonl`).
    pub fn transcript(text: &str) -> Vec<RecordedCall> {
        text.lines().filter(|line| !line.trim().is_empty()).map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// The result of the first recorded call whose command contains every fragment.
    pub fn reply(calls: &[RecordedCall], fragments: &[&str]) -> Finished {
        calls
            .iter()
            .find(|call| fragments.iter().all(|fragment| call.command.contains(fragment)))
            .map(|call| Finished { code: call.code, stdout: call.stdout.clone(), stderr: call.stderr.clone() })
            .unwrap_or_else(|| panic!("the transcript has no call with {fragments:?}"))
    }

    impl Runner for RecordedRunner {
        async fn run_with_input(
            &self,
            program: &str,
            args: &[String],
            _input: Option<&str>,
        ) -> Result<Finished, ServiceError> {
            let line = format!("{program} {}", args.join(" "));
            self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line.clone());
            let mut replies = self.replies.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
        let runner = SystemRunner { timeout: Duration::from_millis(200), transcript: None };
        let error = runner.run("sleep", &["5".into()]).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Timeout);
    }

    #[test]
    fn recordings_never_hold_a_password() {
        assert_eq!(
            redact_secrets("acls/x set auth userid=u1 password=s3cret\n"),
            "acls/x set auth userid=u1 password=<redacted>\n"
        );
        assert_eq!(redact_secrets("--user u --password s3cret --x"), "--user u --password <redacted> --x");
        assert_eq!(redact_secrets("Parameter password is now 's3cret'."), "Parameter password is now '<redacted>'.");
        assert_eq!(redact_secrets("no secret here"), "no secret here");
    }

    #[tokio::test]
    async fn a_missing_program_is_unavailable() {
        let error = SystemRunner::default().run("basalt-no-such-tool", &[]).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Unavailable);
    }
}
