//! Headless Chromium for the browser tests: load a page, let its scripts run for a budget of
//! virtual time, then dump its DOM or take a screenshot. Every run has a timeout and is killed
//! (its whole process group) if it overruns or the test fails.
//!
//! The browser is `$CHROMIUM`, else `/usr/bin/chromium`; when neither exists, the repository's
//! `.ci/install-chromium` is run once (Debian's `chromium` package) so `cargo test` works on a
//! fresh machine, and the test fails with a clear message if there is still no browser.

#![allow(dead_code)] // Each test binary uses part of the harness.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one Chromium run may take, start to exit.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The flags every run gets: headless, no sandbox (tests may run as root), and nothing that
/// reaches out to the network by itself (the machine may have none).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
];

/// The browser's path, installing it first if needed (see the [module docs](self)).
pub fn chromium_path() -> PathBuf {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let wanted = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if wanted.exists() {
        return wanted;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/install-chromium");
    let mut tried = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if !*tried {
        *tried = true;
        eprintln!(
            "{} is missing: running {}",
            wanted.display(),
            script.display()
        );
        let status = Command::new("bash")
            .arg(&script)
            .env("INSTALL_CHROMIUM_NONINTERACTIVE", "1")
            .stdin(Stdio::null())
            .status();
        eprintln!("{}: {status:?}", script.display());
    }
    assert!(
        wanted.exists(),
        "headless Chromium is needed at {} (CHROMIUM sets the path, /usr/bin/chromium by default); \
         {} did not provide it: install Debian's `chromium` package by hand, or point CHROMIUM at \
         a Chromium or Chrome binary",
        wanted.display(),
        script.display()
    );
    wanted
}

/// A Chromium run, killed with its process group when dropped.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
                // SAFETY: kill(2) on the process group this run leads; no memory is involved.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = self.0.wait();
        }
    }
}

/// One browser profile (a fresh directory): runs made with it share its `localStorage`, as
/// reloads of a page in one browser do.
pub struct Browser {
    path: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    pub fn new() -> Self {
        Browser {
            path: chromium_path(),
            profile: tempfile::tempdir().expect("a profile directory"),
        }
    }

    /// Runs the browser with `args` on `url`; returns its stdout. Panics if it does not exit in
    /// time or fails.
    fn run(&self, args: &[String], url: &str) -> String {
        let mut command = Command::new(&self.path);
        command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut run = Run(command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.path.display())));
        let mut stdout = run.0.stdout.take().expect("piped");
        let mut stderr = run.0.stderr.take().expect("piped");
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let err = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = (&mut stderr).take(1 << 20).read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = run.0.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not finish within {RUN_TIMEOUT:?} on {url}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        assert!(
            status.success(),
            "chromium failed ({status}) on {url}:\n{stderr}"
        );
        stdout
    }

    /// The DOM of `url` after `budget` of virtual time (scripts, timers and fetches ran).
    pub fn dump_dom(&self, url: &str, budget: Duration) -> String {
        self.run(
            &[
                format!("--virtual-time-budget={}", budget.as_millis()),
                "--dump-dom".to_string(),
            ],
            url,
        )
    }

    /// A screenshot of `url` (`width` x `height`) after `budget` of virtual time, written to
    /// `path` (PNG).
    pub fn screenshot(&self, url: &str, budget: Duration, path: &Path, width: u32, height: u32) {
        self.run(
            &[
                format!("--virtual-time-budget={}", budget.as_millis()),
                format!("--window-size={width},{height}"),
                format!("--screenshot={}", path.display()),
            ],
            url,
        );
        let png = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{} is not a screenshot ({} bytes)",
            path.display(),
            png.len()
        );
    }
}

/// The value of attribute `name` in start tag `tag` (as the DOM dump writes it: `name="value"`).
pub fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let end = tag[at..].find('"')?;
    Some(&tag[at..at + end])
}

/// The start tags of the elements that carry attribute `name`, e.g. every
/// `<article class="node" data-node-id="2" data-role="leader" ...>`.
pub fn tags_with<'a>(dom: &'a str, name: &str) -> Vec<&'a str> {
    let key = format!(" {name}=\"");
    let mut tags = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find(&key) {
        let start = rest[..at].rfind('<').unwrap_or(0);
        let end = at + rest[at..].find('>').unwrap_or(rest.len() - at);
        tags.push(&rest[start..end]);
        rest = &rest[end..];
    }
    tags
}

/// The text right inside the element with `id` (up to its first child or its end tag).
pub fn text_of_id<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let key = format!(" id=\"{id}\"");
    let at = dom.find(&key)?;
    let open_end = at + dom[at..].find('>')? + 1;
    let close = dom[open_end..].find('<')?;
    Some(dom[open_end..open_end + close].trim())
}
