//! Shared by the end-to-end bench tests: the built binaries and a bounded run.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quasar-bench"))
}

/// `quasar` next to `quasar-bench` (`cargo test --workspace` builds it).
pub fn quasar() -> PathBuf {
    let bin = bench()
        .parent()
        .expect("the bench binary has a directory")
        .join("quasar");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p quasar-node` first (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// Runs `quasar-bench args`; past `limit` it gets SIGTERM (it then stops the nodes it
/// spawned), SIGKILL 5 s later, and the test fails. The limit only guards against a hang.
pub fn run(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(bench())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quasar-bench starts");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait on quasar-bench").is_some() {
            break;
        }
        if Instant::now() > deadline {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "quasar-bench {args:?} ran past {limit:?}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("collect output")
}

/// The last stdout line of a successful run, parsed as JSON.
pub fn json_of(out: &Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("one JSON line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"))
}
