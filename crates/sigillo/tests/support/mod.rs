//! A long-running process started by a test (`sigillo` as a proxy or daemon, or a peer such
//! as a resolver), with its stderr lines collected as they come, waited for by content, and a
//! SIGTERM stop.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `sigillo` (killed on drop if still running).
pub struct Sigillo {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    what: String,
}

impl Sigillo {
    /// Starts `sigillo ARGS` with no stdin and stdout, collecting stderr lines.
    pub fn spawn<S: AsRef<OsStr>>(args: &[S]) -> Sigillo {
        let what = args
            .iter()
            .take(2)
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let what = format!("sigillo {what}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sigillo"));
        command.args(args);
        Self::spawn_command(command, what)
    }

    /// Starts another long-running program the same way (a peer such as a resolver), named
    /// `what` in messages.
    pub fn spawn_command(mut command: Command, what: String) -> Sigillo {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Sigillo { child, lines, what }
    }

    /// The stderr lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first stderr line containing `needle`, waiting for it up to `timeout`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
                    return line;
                }
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.what,
                    self.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from {} within {timeout:?}:\n{}",
                self.what,
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address of its `listening on ADDR` line (`strip-proxy`, `policy serve`), waiting for
    /// it up to 20 s; the address ends at a space, `,` or `;`.
    pub fn listening_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_line("listening on ", Duration::from_secs(20));
        line.split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split([' ', ',', ';']).next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running {timeout:?} after SIGTERM",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sigillo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
