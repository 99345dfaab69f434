//! The SASL server against dbus's own auth scripts, against real clients (libdbus, GDBus,
//! sd-bus) on a socket, and against input cut anywhere or made of garbage.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use telbus_broker::auth::{AuthConfig, AuthError, Authenticated, Identity, Sasl};

const GUID: &str = "5fa01f4202cd837709a3274ca0df9d00";
const SCRIPTS: &str = "/usr/lib/dbus-1.0/installed-tests/dbus/data/auth";

fn config(mechanisms: &[&str], allow_anonymous: bool) -> Arc<AuthConfig> {
    Arc::new(AuthConfig {
        mechanisms: mechanisms.iter().map(|m| m.to_string()).collect(),
        allow_anonymous,
        guid: GUID.into(),
        unix_fd_capable: true,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn our_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn our_user_name() -> String {
    let output = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// How the caller of `Sasl::feed` keeps its input: unconsumed bytes stay for the next call.
struct Conversation {
    sasl: Sasl,
    pending: Vec<u8>,
    replies: Vec<u8>,
    outcome: Option<Result<Authenticated, AuthError>>,
}

impl Conversation {
    fn new(sasl: Sasl) -> Self {
        Conversation {
            sasl,
            pending: Vec::new(),
            replies: Vec::new(),
            outcome: None,
        }
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        if self.outcome.is_some() {
            return;
        }
        match self.sasl.feed(&self.pending, &mut self.replies) {
            Ok(progress) => {
                assert!(progress.consumed <= self.pending.len());
                self.pending.drain(..progress.consumed);
                if let Some(done) = progress.done {
                    self.outcome = Some(Ok(done));
                }
            }
            Err(e) => self.outcome = Some(Err(e)),
        }
    }
}

// --- dbus's auth scripts ------------------------------------------------------------------------

/// A quoted script argument: text in '…' with \r, \n and \\ escapes.
fn unquote(text: &str) -> String {
    let mut out = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in text.chars() {
        match c {
            _ if escaped => {
                out.push(match c {
                    'r' => '\r',
                    'n' => '\n',
                    _ => c,
                });
                escaped = false;
            }
            '\\' => escaped = true,
            '\'' => quoted = !quoted,
            ' ' | '\t' if !quoted => break,
            _ => out.push(c),
        }
    }
    out
}

/// Why a server-side script is not run, or None to run it.
fn reason_to_skip(script: &str) -> Option<&'static str> {
    if !script.lines().any(|l| l.trim() == "SERVER") {
        Some("a client-side script")
    } else if script.contains("DBUS_COOKIE_SHA1") {
        Some("DBUS_COOKIE_SHA1 is not supported")
    } else if script.lines().any(|l| l.trim() == "WIN_ONLY") {
        Some("Windows only")
    } else {
        None
    }
}

/// Run one server-side script the way dbus's own runner does: `SEND` appends CRLF, `EXPECT_*`
/// check what the server said, its state and the client's identity.
fn run_script(name: &str, script: &str) -> Result<(), String> {
    let mut peer_uid = Some(our_uid());
    let mut mechanisms: Vec<String> = Vec::new();
    let mut conversation: Option<Conversation> = None;
    let mut replies = String::new();
    for (number, line) in script.lines().enumerate() {
        let at = format!("{name}:{}", number + 1);
        let line = line.trim_start();
        let (word, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
        if let Some(c) = &mut conversation {
            replies.push_str(&String::from_utf8(std::mem::take(&mut c.replies)).unwrap());
        }
        let state = conversation.as_ref().map(|c| match &c.outcome {
            None => "WAITING_FOR_INPUT",
            Some(Ok(_)) if c.pending.is_empty() => "AUTHENTICATED",
            Some(Ok(_)) => "AUTHENTICATED_WITH_UNUSED_BYTES",
            Some(Err(_)) => "NEED_DISCONNECT",
        });
        let identity = conversation.as_ref().and_then(|c| match &c.outcome {
            Some(Ok(done)) => Some(done.identity),
            _ => None,
        });
        match word {
            "" | "SERVER" | "UNIX_ONLY" => {}
            _ if word.starts_with('#') => {}
            "NO_CREDENTIALS" => peer_uid = None,
            "ROOT_CREDENTIALS" => peer_uid = Some(0),
            "SILLY_CREDENTIALS" => peer_uid = Some(4312),
            "ALLOWED_MECHS" => mechanisms = rest.split_whitespace().map(String::from).collect(),
            "SEND" => {
                let uid = our_uid();
                let text = unquote(rest)
                    .replace("WRONG_USERID_HEX", &hex((uid + 1).to_string().as_bytes()))
                    .replace("USERID_HEX", &hex(uid.to_string().as_bytes()))
                    .replace("USERNAME_HEX", &hex(our_user_name().as_bytes()));
                let c = conversation.get_or_insert_with(|| {
                    let config = Arc::new(AuthConfig {
                        mechanisms: mechanisms.clone(),
                        // dbus's auth layer offers ANONYMOUS; the bus decides later.
                        allow_anonymous: true,
                        guid: GUID.into(),
                        unix_fd_capable: true,
                    });
                    let mut c = Conversation::new(Sasl::new(config, peer_uid));
                    // The credentials byte is the transport's business in dbus.
                    c.receive(b"\0");
                    c
                });
                c.receive(format!("{text}\r\n").as_bytes());
            }
            "EXPECT_COMMAND" => {
                let Some((reply, tail)) = replies.split_once("\r\n") else {
                    return Err(format!("{at}: expected {rest}, the server said nothing"));
                };
                if reply.split(' ').next() != Some(rest.trim()) {
                    return Err(format!("{at}: expected {rest}, the server said {reply:?}"));
                }
                replies = tail.to_string();
            }
            "EXPECT_STATE" => {
                if state != Some(rest.trim()) {
                    return Err(format!("{at}: expected state {rest}, have {state:?}"));
                }
            }
            "EXPECT_UNUSED" => {
                let c = conversation.as_mut().ok_or(format!("{at}: nothing sent"))?;
                let expected = unquote(rest);
                if c.pending != expected.as_bytes() {
                    return Err(format!(
                        "{at}: unused bytes {:?}",
                        String::from_utf8_lossy(&c.pending)
                    ));
                }
                c.pending.clear();
            }
            "EXPECT_HAVE_NO_CREDENTIALS" => {
                if matches!(identity, Some(Identity::Uid(_))) {
                    return Err(format!("{at}: authenticated as {identity:?}"));
                }
            }
            "EXPECT_HAVE_SOME_CREDENTIALS" => {
                if !matches!(identity, Some(Identity::Uid(_))) {
                    return Err(format!("{at}: no uid authenticated ({identity:?})"));
                }
            }
            _ => return Err(format!("{at}: the runner does not know {line:?}")),
        }
    }
    if let Some(c) = conversation {
        replies.push_str(&String::from_utf8(c.replies).unwrap());
        if matches!(c.outcome, Some(Ok(_))) && !c.pending.is_empty() {
            return Err(format!("{name}: unused bytes the script did not expect"));
        }
    }
    if !replies.is_empty() {
        return Err(format!(
            "{name}: replies the script did not expect: {replies:?}"
        ));
    }
    Ok(())
}

#[test]
fn dbus_auth_scripts() {
    let Ok(dir) = std::fs::read_dir(SCRIPTS) else {
        eprintln!("SKIPPED: {SCRIPTS} is missing (Debian package dbus-tests)");
        return;
    };
    let mut paths: Vec<_> = dir
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "auth-script"))
        .collect();
    paths.sort();
    let (mut ran, mut failures) = (Vec::new(), Vec::new());
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let script = std::fs::read_to_string(path).unwrap();
        if let Some(why) = reason_to_skip(&script) {
            eprintln!("skipped {name}: {why}");
            continue;
        }
        match run_script(&name, &script) {
            Ok(()) => ran.push(name),
            Err(e) => failures.push(e),
        }
    }
    eprintln!("passed: {}", ran.join(" "));
    assert!(failures.is_empty(), "{failures:#?}");
    // 13 of dbus 1.14's 19 scripts are server-side scripts without DBUS_COOKIE_SHA1.
    assert!(ran.len() >= 13, "only {} scripts ran", ran.len());
}

#[test]
fn the_script_runner_notices_a_wrong_answer() {
    let script = "SERVER\nSEND 'AUTH'\nEXPECT_COMMAND OK\n";
    assert!(run_script("made-up", script).is_err());
    let script =
        "SERVER\nNO_CREDENTIALS\nSEND 'AUTH EXTERNAL USERID_HEX'\nEXPECT_STATE AUTHENTICATED\n";
    assert!(run_script("made-up", script).is_err());
    let script = "SERVER\nSEND 'AUTH'\n";
    assert!(
        run_script("made-up", script).is_err(),
        "unexpected replies are noticed"
    );
}

// --- input cut anywhere ----------------------------------------------------------------------

/// What a pipelining client sends at once, with the first bytes of its Hello.
fn pipelined_input() -> Vec<u8> {
    let mut input = b"\0AUTH EXTERNAL ".to_vec();
    input.extend_from_slice(hex(our_uid().to_string().as_bytes()).as_bytes());
    input.extend_from_slice(b"\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\nl\x01\0\x01\0\0\0\0");
    input
}

#[test]
fn pipelined_input_cut_at_every_point_gives_the_same_conversation() {
    let input = pipelined_input();
    let mut whole = Conversation::new(Sasl::new(config(&[], false), Some(our_uid())));
    whole.receive(&input);
    let done = whole.outcome.as_ref().unwrap().as_ref().unwrap();
    assert_eq!(
        done,
        &Authenticated {
            identity: Identity::Uid(our_uid()),
            unix_fds: true
        }
    );
    assert_eq!(whole.pending, b"l\x01\0\x01\0\0\0\0");
    assert_eq!(
        whole.replies,
        format!("OK {GUID}\r\nAGREE_UNIX_FD\r\n").as_bytes()
    );

    for cut in 0..=input.len() {
        let mut parts = Conversation::new(Sasl::new(config(&[], false), Some(our_uid())));
        parts.receive(&input[..cut]);
        parts.receive(&input[cut..]);
        assert_eq!(parts.replies, whole.replies, "cut at {cut}");
        assert_eq!(parts.pending, whole.pending, "cut at {cut}");
        assert_eq!(parts.outcome, whole.outcome, "cut at {cut}");
    }

    let mut bytewise = Conversation::new(Sasl::new(config(&[], false), Some(our_uid())));
    for b in &input {
        bytewise.receive(std::slice::from_ref(b));
    }
    assert_eq!(bytewise.replies, whole.replies);
    assert_eq!(bytewise.outcome, whole.outcome);
}

/// A small deterministic generator, so that a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn garbage_never_panics_and_every_reply_is_a_server_command() {
    const WORDS: [&str; 14] = [
        "AUTH",
        "EXTERNAL",
        "ANONYMOUS",
        "DATA",
        "BEGIN",
        "CANCEL",
        "ERROR",
        "NEGOTIATE_UNIX_FD",
        "OK",
        "REJECTED",
        "30",
        "31",
        " ",
        "\t",
    ];
    for seed in 0..2000u64 {
        let mut rng = Lcg(seed);
        let mut input = vec![0u8];
        for _ in 0..rng.below(12) {
            for _ in 0..rng.below(4) {
                if rng.below(8) == 0 {
                    input.push(rng.next() as u8);
                } else {
                    input.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
                }
            }
            input.extend_from_slice(if rng.below(10) == 0 { b"\n" } else { b"\r\n" });
        }
        let anonymous = seed % 2 == 0;
        let mut c = Conversation::new(Sasl::new(config(&[], anonymous), Some(1000)));
        let mut at = 0;
        while at < input.len() && c.outcome.is_none() {
            let n = 1 + rng.below(16);
            let end = (at + n).min(input.len());
            c.receive(&input[at..end]);
            at = end;
        }
        let replies = String::from_utf8(c.replies).expect("replies are text");
        for reply in replies.split_terminator("\r\n") {
            let command = reply.split(' ').next().unwrap();
            assert!(
                ["OK", "REJECTED", "DATA", "ERROR", "AGREE_UNIX_FD"].contains(&command),
                "seed {seed}: {reply:?}"
            );
        }
        if let Some(Ok(done)) = c.outcome {
            // Whoever got in, got in through OK.
            assert!(replies.contains("OK "), "seed {seed}");
            assert!(
                done.identity == Identity::Uid(1000) || anonymous,
                "seed {seed}"
            );
        }
    }
}

// --- real clients ------------------------------------------------------------------------------

/// Serve one connection's authentication on a socket, as the bus does, and return the outcome
/// and the first bytes the client sent after BEGIN.
fn serve_one(
    listener: UnixListener,
    config: Arc<AuthConfig>,
) -> (Result<Authenticated, AuthError>, Vec<u8>) {
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let uid = rustix::net::sockopt::socket_peercred(&stream)
        .unwrap()
        .uid
        .as_raw();
    let mut c = Conversation::new(Sasl::new(config, Some(uid)));
    let mut buf = [0u8; 4096];
    while c.outcome.is_none() {
        let n = stream.read(&mut buf).expect("the client talks");
        assert!(
            n > 0,
            "the client hung up; replies so far: {:?}",
            String::from_utf8_lossy(&c.replies)
        );
        c.receive(&buf[..n]);
        stream.write_all(&std::mem::take(&mut c.replies)).unwrap();
    }
    // The client follows BEGIN with its Hello: wait for its first byte.
    if matches!(c.outcome, Some(Ok(_))) && c.pending.is_empty() {
        let n = stream.read(&mut buf).unwrap();
        c.pending.extend_from_slice(&buf[..n]);
    }
    (c.outcome.unwrap(), c.pending)
}

fn authenticate_client(
    program: &str,
    args: &[&str],
    config: Arc<AuthConfig>,
) -> Option<(Authenticated, Vec<u8>)> {
    if Command::new(program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("SKIPPED: {program} is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    let listener = UnixListener::bind(&path).unwrap();
    let address = format!("unix:path={}", path.display());
    let server = std::thread::spawn(move || serve_one(listener, config));
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("ADDRESS", &address))
        .collect();
    let mut client = Command::new(program)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (outcome, after) = server.join().unwrap();
    let _ = client.kill();
    let _ = client.wait();
    let done = outcome.unwrap_or_else(|e| panic!("{program}: {e}"));
    Some((done, after))
}

fn assert_client_gets_in(program: &str, args: &[&str]) {
    let Some((done, after)) = authenticate_client(program, args, config(&[], false)) else {
        return;
    };
    assert_eq!(done.identity, Identity::Uid(our_uid()), "{program}");
    assert!(
        done.unix_fds,
        "{program} negotiates fd passing on a unix socket"
    );
    // A message header starts with the byte order: 'l' or 'B'.
    assert!(
        matches!(after.first(), Some(b'l' | b'B')),
        "{program} sent {after:?} after BEGIN"
    );
}

#[test]
fn libdbus_authenticates() {
    assert_client_gets_in(
        "dbus-send",
        &[
            "--address=ADDRESS",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/",
            "org.freedesktop.DBus.Peer.Ping",
        ],
    );
}

#[test]
fn gdbus_authenticates() {
    assert_client_gets_in(
        "gdbus",
        &[
            "call",
            "--address",
            "ADDRESS",
            "--dest",
            "org.freedesktop.DBus",
            "--object-path",
            "/",
            "--method",
            "org.freedesktop.DBus.Peer.Ping",
        ],
    );
}

#[test]
fn sd_bus_authenticates() {
    assert_client_gets_in(
        "busctl",
        &[
            "--address=ADDRESS",
            "call",
            "org.freedesktop.DBus",
            "/",
            "org.freedesktop.DBus.Peer",
            "Ping",
        ],
    );
}

#[test]
fn a_client_offered_only_anonymous_falls_back_to_it() {
    // libdbus tries EXTERNAL first, then what REJECTED lists.
    let Some((done, _)) = authenticate_client(
        "dbus-send",
        &[
            "--address=ADDRESS",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/",
            "org.freedesktop.DBus.Peer.Ping",
        ],
        config(&["ANONYMOUS"], true),
    ) else {
        return;
    };
    assert_eq!(done.identity, Identity::Anonymous);
}

#[test]
fn scripts_directory_is_where_the_test_looks() {
    // Keeps the skip above honest: on a machine with dbus-tests the scripts must be found.
    if Path::new("/usr/lib/dbus-1.0/installed-tests/dbus").exists() {
        assert!(Path::new(SCRIPTS).is_dir());
    }
}
