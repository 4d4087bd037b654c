//! `raft-kv cluster` (the local launcher) hands its options to the nodes it starts: with
//! `--api-token-file`, every node requires the token.

mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The launcher, stopped with SIGTERM (which stops its nodes) when dropped.
struct Launcher(Child);

impl Drop for Launcher {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a pid this test spawned and has not reaped.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status code of `GET path` on `addr`, with `token` as a bearer token if given; `None` if the
/// node does not answer.
fn get_status(addr: &str, path: &str, token: Option<&str>) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[test]
fn the_launchers_nodes_require_the_api_token_it_was_given() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let token = "launcher-test-token-0123456789";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).expect("the token file is written");
    // The launcher numbers its nodes' ports from a base: six consecutive free ones, the first three
    // for Raft, the others for HTTP.
    let raft_base = procs::consecutive_free_ports(6);
    let http_base = raft_base + 3;
    // The launcher's output, and its nodes' (they inherit it), for a failure's message.
    let log_path = dir.path().join("launcher.log");
    let log = std::fs::File::create(&log_path).expect("the log file is created");
    let _launcher = Launcher(
        Command::new(env!("CARGO_BIN_EXE_raft-kv"))
            .arg("--api-token-file")
            .arg(&token_file)
            .arg("cluster")
            .args(["--nodes", "3", "--insecure"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--base-raft-port", &raft_base.to_string()])
            .args(["--base-http-port", &http_base.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file is shared"))
            .stderr(log)
            .spawn()
            .expect("the launcher starts"),
    );
    for i in 0..3u16 {
        let addr = format!("127.0.0.1:{}", http_base + i);
        let deadline = Instant::now() + Duration::from_secs(20);
        let with_token = loop {
            if let Some(code) = get_status(&addr, "/status", Some(token)) {
                break code;
            }
            assert!(
                Instant::now() < deadline,
                "node {addr} never answered; the launcher's output:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(with_token, 200, "node {addr} with the token");
        assert_eq!(
            get_status(&addr, "/status", None),
            Some(401),
            "node {addr} answered without the token"
        );
    }
}
