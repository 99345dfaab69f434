//! TelAF bindings tests: a bus started with `--bindings`, and the tiny `telaf-client` copied
//! under several names so that the bus recognises each copy as a different app by its exe.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::bus::TestBus;
use super::process::{Background, CLIENT_TIMEOUT, ClientOutput, run_command};

/// The workspace's `interfaces/api` directory (for `apipath`).
pub fn api_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../interfaces/api")
}

/// A bus with a bindings file.
pub struct TelafBus {
    pub bus: TestBus,
    pub bindings: PathBuf,
    /// Holds the bindings file; removed when dropped.
    _dir: TempDir,
    client: PathBuf,
}

impl TelafBus {
    /// Writes `bindings` to a file and starts telbusd with `--bindings=` it. `client` is the
    /// telaf-client binary (`env!("CARGO_BIN_EXE_telaf-client")` in a test).
    #[track_caller]
    pub fn start(bindings: &str, client: &str) -> TelafBus {
        let dir = tempfile::Builder::new()
            .prefix("telbus-telaf.")
            .tempdir()
            .expect("temp dir");
        let file = dir.path().join("system.bindings");
        std::fs::write(&file, bindings).expect("write the bindings");
        // Other users may connect too (the administration test calls as nobody).
        let bus = TestBus::builder()
            .config(r#"<policy context="default"><allow user="*"/></policy>"#)
            .arg(format!("--bindings={}", file.display()))
            .start();
        TelafBus {
            bus,
            bindings: file,
            _dir: dir,
            client: PathBuf::from(client),
        }
    }

    /// Rewrites the bindings file (for Load).
    pub fn rewrite(&self, bindings: &str) {
        std::fs::write(&self.bindings, bindings).expect("rewrite the bindings");
    }

    /// The client binary under the name `<name>`, as `…/telaf-apps/<name>/<name>` beside it.
    /// A hard link, not a copy: a copy is written through a file descriptor that a process
    /// forked meanwhile by a parallel test holds until its exec, making ours fail (ETXTBSY).
    pub fn client_exe(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::MetadataExt;
        let dir = self
            .client
            .parent()
            .expect("telaf-client has a directory")
            .join("telaf-apps")
            .join(name);
        let exe = dir.join(name);
        std::fs::create_dir_all(&dir).expect("client dir");
        let current = std::fs::metadata(&self.client).expect("telaf-client").ino();
        if std::fs::metadata(&exe).map(|m| m.ino()).ok() != Some(current) {
            // A link to an older build: replace it. Parallel tests may race here; the loser
            // finds the new link made by the winner.
            let _ = std::fs::remove_file(&exe);
            if let Err(e) = std::fs::hard_link(&self.client, &exe)
                && e.kind() != std::io::ErrorKind::AlreadyExists
            {
                panic!("cannot link {}: {e}", exe.display());
            }
        }
        exe
    }

    fn command(&self, name: &str, steps: &[&str]) -> Command {
        let mut command = self.bus.command(self.client_exe(name));
        command.arg(self.bus.address()).args(steps);
        command
    }

    /// Runs the client copy `name` through `steps` and returns its output.
    pub fn run(&self, name: &str, steps: &[&str]) -> ClientOutput {
        run_command(self.command(name, steps), CLIENT_TIMEOUT)
    }

    /// Starts the client copy `name` on `steps` (which should end with `hold`).
    pub fn spawn(&self, name: &str, steps: &[&str]) -> Background {
        Background::spawn(self.command(name, steps))
    }
}
