//! The `shardcache` binary's logs: what a normal client hang-up costs, JSON lines for log
//! pipelines, no terminal colours in files, and the log settings named in `--help`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `shardcache serve` over a local directory holding one 8 MiB object; hangs up mid-way
/// through a download of it and opens a bare TCP probe; then stops it and returns its output.
fn serve_and_hang_up(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/b")).unwrap();
    std::fs::write(dir.path().join("data/b/big"), common::data(8 << 20, 1)).unwrap();
    let (s3, admin) = (common::free_port(), common::free_port());
    let config = dir.path().join("config.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{s3}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: 0\n\
         graceful_shutdown_timeout_seconds: 1\ncache:\n  memory_bytes: 33554432\n  disk: null\n\
         upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n",
        dir.path().join("data").display()
    );
    std::fs::write(&config, yaml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardcache"));
    cmd.args(args).arg("serve").arg("--config").arg(&config);
    cmd.env_remove("SHARDCACHE_LOG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    cmd.envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = KillOnDrop(Some(cmd.spawn().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(20);
    // The listeners start on threads of their own: wait for both, and leave one connection
    // unused (a client that connects and goes away).
    while TcpStream::connect(("127.0.0.1", admin)).is_err() || TcpStream::connect(("127.0.0.1", s3)).is_err() {
        assert!(Instant::now() < deadline, "shardcache did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut client = TcpStream::connect(("127.0.0.1", s3)).unwrap();
    client.write_all(b"GET /b/big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 4096];
    client.read_exact(&mut first).unwrap();
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    // SIGTERM: a clean stop flushes the logs.
    let child = guard.0.take().expect("the child is still ours");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap()
}

/// Kills and reaps the child if the test fails before it stops it: no process outlives a test.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_client_hanging_up_is_not_an_error_and_logs_carry_no_colour_codes() {
    let logs = serve_and_hang_up(&[], &[]);
    assert!(logs.contains("shardcache starting"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI codes in a log that is not a terminal:\n{logs}"
    );
    let errors: Vec<_> = logs.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn json_logs_are_one_object_per_line_and_rust_log_is_honoured() {
    let logs = serve_and_hang_up(&["--log-format", "json"], &[("RUST_LOG", "debug")]);
    let mut requests = 0;
    for line in logs.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
        if v["fields"]["message"] == "request" {
            requests += 1;
            assert_eq!(v["level"], "DEBUG", "a hang-up is logged at debug: {line}");
        }
    }
    assert!(requests >= 1, "RUST_LOG=debug shows the request line:\n{logs}");
}

#[test]
fn help_names_the_log_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardcache"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in ["SHARDCACHE_LOG", "RUST_LOG", "NO_COLOR", "--log-format"] {
        assert!(help.contains(needle), "--help does not mention {needle}:\n{help}");
    }
}

/// A listener address already in use stops shardcache at once with an error naming the field,
/// instead of Pingora's 30 s of retries while the rest of the process looks healthy.
#[test]
fn a_taken_port_is_an_error_naming_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.path().join("config.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{port}\ncache:\n  disk: null\n\
         upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n",
        common::free_port(),
        dir.path().display()
    );
    std::fs::write(&config, yaml).unwrap();
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardcache"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("shardcache kept running with its admin port taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains(&format!("admin_listen: cannot listen on 127.0.0.1:{port}")),
        "{text}"
    );
    drop(taken);
}

/// The grace period of the SIGTERM test, long enough that a request sent half a second after
/// the signal is inside it on a loaded machine.
const GRACE: u64 = 5;

/// SIGTERM: not ready at once, still serving new clients through the grace period, then no new
/// connections, while a download started before it finishes whole within the drain timeout.
#[test]
fn sigterm_drains_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/b")).unwrap();
    let big = common::data(48 << 20, 3);
    std::fs::write(dir.path().join("data/b/big"), &big).unwrap();
    std::fs::write(dir.path().join("data/b/small"), b"small").unwrap();
    let (s3, admin) = (common::free_port(), common::free_port());
    let config = dir.path().join("config.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{s3}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: {GRACE}\n\
         graceful_shutdown_timeout_seconds: 6\ncache:\n  memory_bytes: 134217728\n  disk: null\n\
         upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n",
        dir.path().join("data").display()
    );
    std::fs::write(&config, yaml).unwrap();
    let mut served = common::Served::start(&config, admin);
    let get = |port: u16, path: &str| -> std::io::Result<String> {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        c.read_to_string(&mut answer)?;
        Ok(answer)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(admin, "/readyz").is_ok_and(|a| a.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "shardcache did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A download read slowly (about 8 MiB/s), started before SIGTERM.
    let mut download = TcpStream::connect(("127.0.0.1", s3)).unwrap();
    download
        .write_all(b"GET /b/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match download.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let term = Instant::now();
    served.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    let ready = get(admin, "/readyz").unwrap();
    assert!(
        ready.starts_with("HTTP/1.1 503"),
        "not ready during the grace period: {ready}"
    );
    let during = get(s3, "/b/small").unwrap();
    assert!(
        during.starts_with("HTTP/1.1 200") && during.ends_with("small"),
        "{during}"
    );
    std::thread::sleep(Duration::from_secs(GRACE).saturating_sub(term.elapsed()) + Duration::from_millis(700));
    let after = get(s3, "/b/small");
    assert!(
        after.as_ref().map_or(true, |a| !a.starts_with("HTTP/1.1 200")),
        "a new request was served after the grace period: {after:?}"
    );
    let got = reader.join().unwrap();
    let body = &got[got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.len(), big.len(), "the download in flight was cut");
    assert!(body == big.as_slice());
    // It exits once the drain is over (grace + drain 6 s), not before the download ended; the
    // bound only guards against a hang.
    while served.child.try_wait().unwrap().is_none() {
        assert!(
            term.elapsed() < Duration::from_secs(60),
            "shardcache did not exit after its drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGHUP with the smallest config (no `auth`, no `tls`: nothing it can reload) is logged,
/// never fatal, and SIGPIPE is ignored: the process keeps serving through both.
#[test]
fn sighup_and_sigpipe_never_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/b")).unwrap();
    std::fs::write(dir.path().join("data/b/k"), b"still here").unwrap();
    let (s3, admin) = (common::free_port(), common::free_port());
    let config = dir.path().join("config.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{s3}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: 0\n\
         upstreams:\n  local:\n    kind: fs\n    root: {}\ndefault_upstream: local\n",
        dir.path().join("data").display()
    );
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut served = common::Served::start_with(&config, admin, |c| {
        c.env_remove("SHARDCACHE_LOG").env_remove("RUST_LOG").stdout(log_file);
    });
    let get = |path: &str| -> String {
        let mut c = TcpStream::connect(("127.0.0.1", s3)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(get("/b/k").ends_with("still here"));
    for signal in [libc::SIGHUP, libc::SIGPIPE, libc::SIGHUP] {
        served.signal(signal);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            served.child.try_wait().unwrap().is_none(),
            "signal {signal} stopped shardcache"
        );
        assert!(get("/b/k").ends_with("still here"), "not serving after signal {signal}");
    }
    served.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    while served.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "shardcache did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("SIGHUP") && text.contains("nothing to reload"),
        "a SIGHUP it cannot act on is logged, saying why: {text}"
    );
}
