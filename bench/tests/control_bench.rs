//! control-bench against a real control instance in a child process (`control-bench --serve`),
//! tiny loads over the memory store and bus: accepted pushes are counted with control's own CPU,
//! and pushes that control refuses fail the run.

use std::process::{Command, Output};

/// Runs `control-bench` on the memory store and bus only, for a second, with `users` online and
/// `extra` arguments.
fn control_bench(users: usize, extra: &[&str]) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_control-bench"))
        .args([
            "--no-kafka",
            "--no-postgres",
            "--seconds=1",
            "--warmup-secs=0.2",
            "--concurrency=8",
        ])
        .arg(format!("--users={users}"))
        .args(extra)
        .output()
        .expect("running control-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    (output, stdout)
}

/// The number right after `label` in `line`.
fn number_after(line: &str, label: &str) -> f64 {
    line.split_once(label)
        .and_then(|(_, rest)| {
            rest.trim_start()
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no number after {label:?} in {line:?}"))
}

#[test]
fn pushes_are_accepted_and_measured_with_controls_own_cpu() {
    let (output, stdout) = control_bench(50, &[]);
    assert!(output.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("pushes accepted (memory store, memory bus):"))
        .unwrap_or_else(|| panic!("no memory-bus figure in {stdout}"));
    assert!(number_after(line, "") > 0.0, "pushes per second: {line}");
    assert_eq!(number_after(line, "failed requests:"), 0.0, "{line}");
    // The child's CPU (utime + stime of its own process), per push and per CPU-second.
    assert!(number_after(line, "control CPU") > 0.0, "{line}");
    let per_push = number_after(line, "cores,");
    assert!(per_push > 0.0 && per_push < 100_000.0, "{line}");
    assert!(
        number_after(line, "=") > 0.0,
        "pushes per control CPU-second: {line}"
    );
    assert!(line.contains("load generator"), "{line}");
}

#[test]
fn refused_pushes_fail_the_run() {
    // 1,001 keys per push is over control's default bound of 1,000 targets: every push is a 400.
    let (output, stdout) = control_bench(1001, &["--keys-per-push=1001"]);
    assert!(!output.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("pushes accepted (memory store, memory bus):"))
        .unwrap_or_else(|| panic!("no memory-bus figure in {stdout}"));
    assert_eq!(number_after(line, ""), 0.0, "{line}");
    assert!(number_after(line, "failed requests:") > 0.0, "{line}");
}
