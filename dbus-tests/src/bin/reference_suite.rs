//! dbus's own test suite (Debian package `dbus-tests`) against telbusd and dbus-daemon, side
//! by side, in one run.
//!
//! Every daemon-facing case runs on its own, with a timeout, against each broker; the table
//! shows both results. Cases telbusd does not pass yet are listed in
//! `dbus-tests/reference-expected-failures.txt`. The run fails when a case outside that list
//! fails (or is skipped where dbus-daemon passes), and when a listed case passes, so that the
//! list always says exactly what is missing. A case whose reason starts with "flaky" passes only
//! sometimes: its passing is not an error, its failing is expected.
//!
//! dbus-daemon runs first. Each case then gets a time limit on telbusd from what it took on
//! dbus-daemon (twice that, plus three seconds), so that a telbusd that hangs in many cases
//! still finishes the run in a few minutes, while slow cases (`/activation/forking` takes six
//! seconds on dbus-daemon) keep the time they need.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
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

/// One run of a test binary: the whole binary (the shell test) or one case of it.
type Run = (String, String);

/// How long a case may take on telbusd, given how long it took on dbus-daemon.
fn time_limit(on_reference: Option<Duration>, cap: Duration) -> Duration {
    match on_reference {
        Some(took) => (took * 2 + Duration::from_secs(3)).min(cap),
        None => cap,
    }
}

struct Options {
    telbusd: PathBuf,
    reference: PathBuf,
    expected: PathBuf,
    only: Option<String>,
    /// The longest any one run may take (dbus-daemon's runs, and telbusd's cap).
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
        timeout: Duration::from_secs(20),
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

/// Run one case against `daemon` in a fresh process group, killed at the timeout; also says
/// how long the run took.
fn run_case(
    binary: &str,
    case: &str,
    daemon: &Path,
    timeout: Duration,
) -> (Vec<(String, CaseResult)>, Duration) {
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
            return (vec![(case.to_string(), r)], Duration::ZERO);
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
    let mut timed_out = None;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if started.elapsed() > timeout {
            timed_out = Some(timeout);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    // The test and every broker it started go away with the group.
    // SAFETY: kill(2) on a process group we created.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    let text = finished
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    (parse_tap(&text, case, timed_out), took)
}

/// Results from TAP output. A case that printed no result failed (or timed out after the
/// given time).
fn parse_tap(text: &str, case: &str, timed_out: Option<Duration>) -> Vec<(String, CaseResult)> {
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
        let reason = match timed_out {
            Some(limit) => format!(
                "timed out after {:.1} s (last said: {last_comment})",
                limit.as_secs_f64()
            ),
            None => format!("no result (last said: {last_comment})"),
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

/// The results of every case, and how long each run took.
#[derive(Default)]
struct SuiteRun {
    results: Results,
    took: BTreeMap<Run, Duration>,
}

/// Every case of `binaries` against `daemon`, two at a time, each run within `limit(run)`.
fn run_all(binaries: &[&str], daemon: &Path, limit: impl Fn(&Run) -> Duration + Sync) -> SuiteRun {
    let work: Vec<Run> = binaries
        .iter()
        .flat_map(|b| cases(b).into_iter().map(move |c| (b.to_string(), c)))
        .collect();
    let work = Mutex::new(work.into_iter());
    let suite = Mutex::new(SuiteRun::default());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let Some(run) = work.lock().unwrap().next() else {
                        break;
                    };
                    let (results, took) = run_case(&run.0, &run.1, daemon, limit(&run));
                    let mut suite = suite.lock().unwrap();
                    for (name, r) in results {
                        suite.results.insert((run.0.clone(), name), r);
                    }
                    suite.took.insert(run, took);
                }
            });
        }
    });
    suite.into_inner().unwrap()
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
    let started = Instant::now();
    let reference_run = run_all(&binaries, &options.reference, |_| options.timeout);
    let reference_took = started.elapsed();
    let telbusd_run = run_all(&binaries, &options.telbusd, |run| {
        time_limit(reference_run.took.get(run).copied(), options.timeout)
    });
    let telbusd_took = started.elapsed() - reference_took;
    let (ours, theirs) = (telbusd_run.results, reference_run.results);
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
        "\ntook {:.0} s on telbusd, {:.0} s on dbus-daemon",
        telbusd_took.as_secs_f64(),
        reference_took.as_secs_f64()
    );
    println!(
        "reference suite: {} passed, {} failed, {} skipped",
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
        let r = parse_tap("# Resetting\n# hmm\nnot ok 1 /a/b\n", "/a/b", None);
        assert_eq!(r[0].1.outcome, Outcome::Fail);
        assert_eq!(r[0].1.reason, "hmm");
        let r = parse_tap("ok 1 /x # SKIP needs root\n", "/x", None);
        assert_eq!(r[0].1.outcome, Outcome::Skip);
        let r = parse_tap("# Start of y tests\n", "/y", Some(Duration::from_secs(3)));
        assert_eq!(r[0].1.outcome, Outcome::Fail);
        assert_eq!(
            r[0].1.reason,
            "timed out after 3.0 s (last said: Start of y tests)"
        );
        let r = parse_tap("ok 1 - one\nnot ok 2 - two\n", "", None);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].0, "two");
    }

    #[test]
    fn time_limits_follow_dbus_daemon() {
        let cap = Duration::from_secs(20);
        let fast = time_limit(Some(Duration::from_millis(50)), cap);
        assert_eq!(fast, Duration::from_millis(3100));
        let slow = time_limit(Some(Duration::from_secs(6)), cap);
        assert_eq!(slow, Duration::from_secs(15));
        assert_eq!(time_limit(Some(Duration::from_secs(30)), cap), cap);
        assert_eq!(time_limit(None, cap), cap);
    }
}
