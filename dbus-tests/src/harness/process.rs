//! Running client programs with a time limit, and keeping long-running ones in the background.

use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a client program may run before it counts as hung.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a finished client program did.
#[derive(Debug, Clone)]
pub struct ClientOutput {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ClientOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing everything the program printed, unless it exited with 0.
    #[track_caller]
    pub fn assert_success(self) -> Self {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    /// Panics, showing everything the program printed, if it exited with 0.
    #[track_caller]
    pub fn assert_failure(self) -> Self {
        assert!(!self.success(), "expected failure:\n{self}");
        self
    }

    /// stdout and stderr together, for asserting on a message wherever the program put it.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for ClientOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\n{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to completion with stdin closed, capturing its output. A program still running
/// after `timeout` is killed (with its process group) and the call panics with what it printed.
#[track_caller]
pub fn run_command(mut command: Command, timeout: Duration) -> ClientOutput {
    let line = command_line(&command);
    let mut background = Background::spawn_named(&mut command, line.clone());
    let status = match background.wait_exit(timeout) {
        Some(status) => status,
        None => {
            let (stdout, stderr) = background.stop();
            panic!(
                "{line}: still running after {timeout:?}, killed\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
            );
        }
    };
    let (stdout, stderr) = background.stop();
    ClientOutput {
        command: line,
        status,
        stdout,
        stderr,
    }
}

/// A program running beside the test (a monitor, a service), its output collected as it comes.
/// Dropping it kills its process group.
pub struct Background {
    name: String,
    child: Child,
    output: Arc<Captured>,
    readers: Vec<JoinHandle<()>>,
}

/// Output collected so far, with a condition variable that is signalled on every new chunk.
#[derive(Default)]
struct Captured {
    text: Mutex<Streams>,
    changed: Condvar,
}

/// Raw bytes, decoded only when read: a chunk may end inside a UTF-8 sequence.
#[derive(Default)]
struct Streams {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_closed: bool,
    stderr_closed: bool,
}

impl Streams {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl Background {
    /// Starts `command` in a process group of its own, stdin closed, stdout and stderr captured.
    #[track_caller]
    pub fn spawn(mut command: Command) -> Background {
        let name = command_line(&command);
        Self::spawn_named(&mut command, name)
    }

    #[track_caller]
    fn spawn_named(command: &mut Command, name: String) -> Background {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let output = Arc::new(Captured::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let readers = vec![
            read_into(stdout, output.clone(), true),
            read_into(stderr, output.clone(), false),
        ];
        Background {
            name,
            child,
            output,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the program has written to stdout so far.
    pub fn stdout(&self) -> String {
        self.output.text.lock().unwrap().stdout()
    }

    /// Everything the program has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.output.text.lock().unwrap().stderr()
    }

    /// Whether the program has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until the stdout seen so far satisfies `done`, and returns it. Panics, showing the
    /// output, after `timeout` or once the stream is closed without satisfying it.
    #[track_caller]
    pub fn wait_for_stdout(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        self.wait_for(true, timeout, done)
    }

    /// Waits until the stderr seen so far satisfies `done`, and returns it (see
    /// [`Background::wait_for_stdout`]).
    #[track_caller]
    pub fn wait_for_stderr(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        self.wait_for(false, timeout, done)
    }

    /// Waits until stdout contains `needle` (see [`Background::wait_for_stdout`]).
    #[track_caller]
    pub fn wait_for_text(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_stdout(timeout, |out| out.contains(needle))
    }

    #[track_caller]
    fn wait_for(&self, stdout: bool, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut streams = self.output.text.lock().unwrap();
        loop {
            let text = if stdout {
                streams.stdout()
            } else {
                streams.stderr()
            };
            if done(&text) {
                return text;
            }
            let now = Instant::now();
            let closed = if stdout {
                streams.stdout_closed
            } else {
                streams.stderr_closed
            };
            if closed || now >= deadline {
                let why = if closed {
                    "closed the stream"
                } else {
                    "timed out"
                };
                let (out, err) = (streams.stdout(), streams.stderr());
                // Unlocked before panicking, so that the reader threads carry on.
                drop(streams);
                panic!(
                    "{}: {why} before the expected output\n--- stdout ---\n{out}--- stderr ---\n{err}",
                    self.name,
                );
            }
            streams = self
                .output
                .changed
                .wait_timeout(streams, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits up to `timeout` for the program to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        // std has no wait with a time limit; polling try_wait with a short, growing pause is
        // simple and costs nothing noticeable for programs that live a few milliseconds.
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.drain_output();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Once the program exited: let the readers take in what it wrote last (they end when its
    /// pipes close), so that `stdout()`/`stderr()` say everything. Bounded, in case something
    /// it started still holds the pipes open.
    fn drain_output(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !self.readers.iter().all(|r| r.is_finished()) {
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills the program (if still running) and returns everything it wrote: (stdout, stderr).
    pub fn stop(mut self) -> (String, String) {
        self.kill();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let streams = self.output.text.lock().unwrap();
        (streams.stdout(), streams.stderr())
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The group too: a client may have children of its own.
            kill_group(self.child.id(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` to the process group led by `pid`.
pub(crate) fn kill_group(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// Copies `stream` into the captured output as it arrives, until end of file.
fn read_into(
    mut stream: impl Read + Send + 'static,
    output: Arc<Captured>,
    is_stdout: bool,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        loop {
            let n = stream.read(&mut buffer).unwrap_or(0);
            let mut streams = output.text.lock().unwrap();
            match (n, is_stdout) {
                (0, true) => streams.stdout_closed = true,
                (0, false) => streams.stderr_closed = true,
                (_, true) => streams.stdout.extend_from_slice(&buffer[..n]),
                (_, false) => streams.stderr.extend_from_slice(&buffer[..n]),
            }
            drop(streams);
            output.changed.notify_all();
            if n == 0 {
                return;
            }
        }
    })
}

/// The command line as a shell would show it, for messages.
fn command_line(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}
