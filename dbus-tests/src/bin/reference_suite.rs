//! dbus's own test suite (Debian package `dbus-tests`) against telbusd and dbus-daemon, side
//! by side, in one run.
//!
//! Every daemon-facing case runs on its own, with a timeout, against each broker; the table
//! shows both results. Cases telbusd does not pass yet are listed in
//! `dbus-tests/reference-expected-failures.txt`. The run fails when a case outside that list
//! fails (or is skipped where dbus-daemon passes), and when a listed case passes, so that the
//! list always says exactly what is missing. A case whose reason starts with "flaky" passes only
//! sometimes: its passing is not an error, its failing is expected.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TESTS: &str = "/usr/lib/dbus-1.0/installed-tests/dbus";

/// The binaries that start a bus, as dbus's installed tests name them.
const BINARIES: &[&str] = &[
    "test-dbus-daemon",
    "test-monitor",
    "test-containers",
    "test-sd-activation",
    "test-header-fields",
    "test-uid-permissions",
    "test-dbus-daemon-eavesdrop",
    "test-dbus-daemon-fork.sh",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    Skip,
}

#[derive(Clone, Debug)]
struct CaseResult {
    outcome: Outcome,
    /// The first diagnostic line, for failures.
    reason: String,
}

struct Options {
    telbusd: PathBuf,
    reference: PathBuf,
    expected: PathBuf,
    only: Option<String>,
    timeout: Duration,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn parse_options() -> Result<Options, String> {
    let root = workspace_root();
    let mut o = Options {
        telbusd: root.join("target/release/telbusd"),
        reference: PathBuf::from("/usr/bin/dbus-daemon"),
        expected: root.join("dbus-tests/reference-expected-failures.txt"),
        only: None,
        timeout: Duration::from_secs(10),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--telbusd" => o.telbusd = value("--telbusd")?.into(),
            "--reference" => o.reference = value("--reference")?.into(),
            "--expected" => o.expected = value("--expected")?.into(),
            "--only" => o.only = Some(value("--only")?),
            "--timeout" => {
                o.timeout = Duration::from_secs(
                    value("--timeout")?
                        .parse()
                        .map_err(|_| "--timeout takes seconds")?,
                )
            }
            "--help" | "-h" => {
                return Err("usage: reference-suite [--telbusd PATH] [--reference PATH] [--expected FILE] [--only BINARY] [--timeout SECONDS]".into());
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// The cases of a GLib test binary (`-l`); the shell test is one case of its own.
fn cases(binary: &str) -> Vec<String> {
    if binary.ends_with(".sh") {
        return vec![String::new()];
    }
    let out = Command::new(Path::new(TESTS).join(binary))
        .arg("-l")
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('/'))
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Run one case against `daemon` in a fresh process group, killed at the timeout.
fn run_case(
    binary: &str,
    case: &str,
    daemon: &Path,
    timeout: Duration,
) -> Vec<(String, CaseResult)> {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let mut command = Command::new(Path::new(TESTS).join(binary));
    command.arg("--tap");
    if !case.is_empty() {
        command.args(["-p", case]);
    }
    command
        .env("DBUS_TEST_DAEMON", daemon)
        .env("DBUS_TEST_DATA", Path::new(TESTS).join("data"))
        .env("DBUS_TEST_DATADIR", "/usr/share")
        .env("DBUS_TEST_EXEC", TESTS)
        .env("XDG_RUNTIME_DIR", scratch.path())
        .env("HOME", scratch.path())
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env_remove("DBUS_STARTER_ADDRESS")
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let r = CaseResult {
                outcome: Outcome::Fail,
                reason: format!("cannot start: {e}"),
            };
            return vec![(case.to_string(), r)];
        }
    };
    let pgid = child.id() as i32;
    let mut stdout = child.stdout.take().expect("piped");
    // Read in a thread: a daemon that forked out of the group may keep the pipe open.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        let _ = done.send(String::from_utf8_lossy(&buf).into_owned());
    });
    let started = Instant::now();
    let mut timed_out = false;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if started.elapsed() > timeout {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The test and every broker it started go away with the group.
    // SAFETY: kill(2) on a process group we created.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    let text = finished
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    parse_tap(&text, case, timed_out)
}

/// Results from TAP output. A case that printed no result failed (or timed out).
fn parse_tap(text: &str, case: &str, timed_out: bool) -> Vec<(String, CaseResult)> {
    let mut results = Vec::new();
    let mut last_comment = String::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            if !c.starts_with("Resetting")
                && !c.starts_with("Time since")
                && !c.starts_with("random seed")
            {
                last_comment = c.to_string();
            }
            continue;
        }
        let (outcome, rest) = if let Some(rest) = line.strip_prefix("not ok ") {
            (Outcome::Fail, rest)
        } else if let Some(rest) = line.strip_prefix("ok ") {
            (Outcome::Pass, rest)
        } else {
            continue;
        };
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit()).trim();
        let (name, directive) = match rest.split_once('#') {
            Some((n, d)) => (n.trim(), d.trim()),
            None => (rest, ""),
        };
        let outcome = if directive.starts_with("SKIP") {
            Outcome::Skip
        } else {
            outcome
        };
        let name = if case.is_empty() {
            name.trim_start_matches("- ").to_string()
        } else {
            case.to_string()
        };
        let reason = if outcome == Outcome::Fail {
            last_comment.clone()
        } else {
            directive.to_string()
        };
        results.push((name, CaseResult { outcome, reason }));
    }
    if results.is_empty() {
        let reason = if timed_out {
            "timed out".to_string()
        } else {
            format!("no result ({})", last_comment)
        };
        results.push((
            case.to_string(),
            CaseResult {
                outcome: Outcome::Fail,
                reason,
            },
        ));
    }
    results
}

type Results = BTreeMap<(String, String), CaseResult>;

/// Every case of `binaries` against `daemon`, two at a time.
fn run_all(binaries: &[&str], daemon: &Path, timeout: Duration) -> Results {
    let work: Vec<(String, String)> = binaries
        .iter()
        .flat_map(|b| cases(b).into_iter().map(move |c| (b.to_string(), c)))
        .collect();
    let work = Arc::new(Mutex::new(work.into_iter()));
    let results = Arc::new(Mutex::new(Results::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (work, results, daemon) = (work.clone(), results.clone(), daemon.to_path_buf());
            std::thread::spawn(move || {
                loop {
                    let Some((binary, case)) = work.lock().unwrap().next() else {
                        break;
                    };
                    for (name, r) in run_case(&binary, &case, &daemon, timeout) {
                        results.lock().unwrap().insert((binary.clone(), name), r);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Arc::try_unwrap(results).ok().unwrap().into_inner().unwrap()
}

fn load_expected(path: &Path) -> BTreeMap<(String, String), String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (entry, reason) = l
                .split_once('#')
                .map_or((l, ""), |(e, r)| (e.trim(), r.trim()));
            let mut words = entry.split_whitespace();
            let binary = words.next()?.to_string();
            let case = words.next().unwrap_or("").to_string();
            Some(((binary, case), reason.to_string()))
        })
        .collect()
}

fn count(results: &Results, binary: &str) -> (usize, usize, usize) {
    let mut c = (0, 0, 0);
    for ((b, _), r) in results {
        if b == binary {
            match r.outcome {
                Outcome::Pass => c.0 += 1,
                Outcome::Fail => c.1 += 1,
                Outcome::Skip => c.2 += 1,
            }
        }
    }
    c
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if !Path::new(TESTS).join("test-dbus-daemon").exists() {
        eprintln!("dbus's installed tests are missing: apt-get install dbus-tests");
        return ExitCode::FAILURE;
    }
    if !options.telbusd.exists() {
        eprintln!(
            "{} is missing: cargo build --release -p telbus-broker",
            options.telbusd.display()
        );
        return ExitCode::FAILURE;
    }
    let binaries: Vec<&str> = BINARIES
        .iter()
        .copied()
        .filter(|b| options.only.as_deref().is_none_or(|o| o == *b))
        .collect();
    let ours = run_all(&binaries, &options.telbusd, options.timeout);
    let theirs = run_all(&binaries, &options.reference, options.timeout);
    let expected = load_expected(&options.expected);

    println!("{:<28} {:>21}   {:>21}", "", "telbusd", "dbus-daemon");
    println!(
        "{:<28} {:>6} {:>6} {:>7}   {:>6} {:>6} {:>7}",
        "test binary", "passed", "failed", "skipped", "passed", "failed", "skipped"
    );
    let mut totals = [0usize; 6];
    for binary in &binaries {
        let (a, b, c) = count(&ours, binary);
        let (d, e, f) = count(&theirs, binary);
        for (t, v) in totals.iter_mut().zip([a, b, c, d, e, f]) {
            *t += v;
        }
        println!("{binary:<28} {a:>6} {b:>6} {c:>7}   {d:>6} {e:>6} {f:>7}");
    }
    println!(
        "{:<28} {:>6} {:>6} {:>7}   {:>6} {:>6} {:>7}",
        "total", totals[0], totals[1], totals[2], totals[3], totals[4], totals[5]
    );

    let mut unexpected = Vec::new();
    let mut fixed = Vec::new();
    let mut listed = Vec::new();
    let mut seen = BTreeSet::new();
    for (key, r) in &ours {
        seen.insert(key.clone());
        let reference = theirs.get(key).map(|r| r.outcome);
        let shortfall = match r.outcome {
            Outcome::Pass => false,
            Outcome::Fail => true,
            // A skip is a shortfall only where dbus-daemon passes.
            Outcome::Skip => reference == Some(Outcome::Pass),
        };
        match (shortfall, expected.get(key)) {
            (true, Some(why)) => listed.push((key.clone(), why.clone(), r.reason.clone())),
            (true, None) => unexpected.push((key.clone(), r.reason.clone(), reference)),
            // A case known to pass only sometimes stays listed until it passes every time.
            (false, Some(why)) if why.starts_with("flaky") => {}
            (false, Some(_)) => fixed.push(key.clone()),
            (false, None) => {}
        }
    }
    let stale: Vec<_> = expected
        .keys()
        .filter(|k| options.only.as_deref().is_none_or(|o| o == k.0) && !seen.contains(*k))
        .cloned()
        .collect();

    if !listed.is_empty() {
        println!("\nexpected failures of telbusd ({}):", listed.len());
        for ((b, c), why, reason) in &listed {
            println!("  {b} {c}  # {why} [{reason}]");
        }
    }
    if !unexpected.is_empty() {
        println!("\nUNEXPECTED failures of telbusd ({}):", unexpected.len());
        for ((b, c), reason, reference) in &unexpected {
            println!("  {b} {c}  [{reason}] (dbus-daemon: {reference:?})");
        }
    }
    if !fixed.is_empty() || !stale.is_empty() {
        println!(
            "\nlisted as expected failures but passing or gone (remove them from {}):",
            options.expected.display()
        );
        for (b, c) in fixed.iter().chain(stale.iter()) {
            println!("  {b} {c}");
        }
    }
    println!(
        "\nreference suite: {} passed, {} failed, {} skipped",
        totals[0], totals[1], totals[2]
    );
    if unexpected.is_empty() && fixed.is_empty() && stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_results_are_read() {
        let r = parse_tap("# Resetting\n# hmm\nnot ok 1 /a/b\n", "/a/b", false);
        assert_eq!(r[0].1.outcome, Outcome::Fail);
        assert_eq!(r[0].1.reason, "hmm");
        let r = parse_tap("ok 1 /x # SKIP needs root\n", "/x", false);
        assert_eq!(r[0].1.outcome, Outcome::Skip);
        let r = parse_tap("", "/y", true);
        assert_eq!(r[0].1.reason, "timed out");
        let r = parse_tap("ok 1 - one\nnot ok 2 - two\n", "", false);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].0, "two");
    }
}
