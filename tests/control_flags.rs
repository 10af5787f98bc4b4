//! `rim control` checks its database statement timeout against its publish timeout before it
//! connects to anything: a durable push waits on users' and rooms' heads that other instances hold
//! while they publish, so a bound at or below one publish would fail contended pushes as if the
//! database were down.

use std::process::{Command, Output};

/// `rim control` with `flags`, against a database that is not there (port 1).
fn control(flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rim"))
        .arg("control")
        .arg("--control-database-url=postgres://nobody@127.0.0.1:1/none")
        .arg("--control-admin-key=admin-key-for-the-flag-tests")
        .args(flags)
        .env("RIM_CLUSTER_SECRET", "cluster-secret-for-the-flag-tests")
        .output()
        .expect("running rim control")
}

#[test]
fn a_statement_timeout_not_above_the_publish_timeout_is_refused_at_start() {
    let refused = control(&[
        "--control-publish-timeout-ms=5000",
        "--control-database-statement-timeout-ms=5000",
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("--control-database-statement-timeout-ms (5s) must be above --control-publish-timeout-ms (5s)"),
        "{stderr}"
    );
    // Above it, or unbounded (0), the flags pass and the instance goes on to the database.
    for timeout in ["5001", "0"] {
        let flag = format!("--control-database-statement-timeout-ms={timeout}");
        let accepted = control(&["--control-publish-timeout-ms=5000", &flag]);
        let stderr = String::from_utf8_lossy(&accepted.stderr);
        assert!(!accepted.status.success(), "{stderr}");
        assert!(
            stderr.contains("connecting to PostgreSQL"),
            "{timeout}: {stderr}"
        );
    }
}
