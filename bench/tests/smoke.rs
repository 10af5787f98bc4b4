//! rim-bench against a real edge (`edge-under-test`, started by the scenarios), tiny loads that
//! run in seconds: the counts in the JSON report must be exactly what was pushed, per connection,
//! over TCP and WebSocket, with the connections split over several worker processes; and a load
//! whose clients are in the wrong room must be reported as failed.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `rim-bench <args> --json <file>`; its exit success and report.
fn bench(args: &[&str]) -> (bool, Value) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_rim-bench"))
        .args(args)
        .arg(format!("--json={}", json.display()))
        .output()
        .expect("running rim-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    let report = std::fs::read_to_string(&json)
        .unwrap_or_else(|err| panic!("no report ({err}):\n{stdout}\n{stderr}"));
    (
        output.status.success(),
        serde_json::from_str(&report).expect("report is JSON"),
    )
}

fn edge_binary() -> String {
    let path = Path::new(env!("CARGO_BIN_EXE_edge-under-test"));
    format!("--edge-binary={}", path.display())
}

fn number(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {value:#}"))
}

#[test]
fn room_counts_every_delivery_per_connection_across_workers() {
    let edge = edge_binary();
    let (ok, report) = bench(&[
        "room",
        &edge,
        "--connections=60",
        "--per-worker=25", // three worker processes
        "--pushes=30",
        "--burst=7",
        "--settle-secs=0",
        "--stall-secs=5",
    ]);
    assert!(ok, "{report:#}");
    assert_eq!(report["ok"], true);
    assert_eq!(number(&report, "/counters/authed"), 60);
    let phases = report["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2, "single and burst");
    for phase in phases {
        assert_eq!(phase["expected"], 30 * 60);
        assert_eq!(phase["delivered"], 30 * 60);
        assert_eq!(phase["server_reached"], 30 * 60);
        assert_eq!(phase["per_connection"], serde_json::json!([30, 30]));
        assert_eq!(phase["short_connections"], 0);
        assert_eq!(number(phase, "/latency/count"), 30 * 60);
    }
    assert_eq!(number(&phases[0], "/requests"), 30);
    assert_eq!(number(&phases[1], "/requests"), 5, "bursts of 7: 7+7+7+7+2");
    // All messages, the whole run long.
    assert_eq!(number(&report, "/counters/messages"), 2 * 30 * 60);
}

#[test]
fn idle_over_websocket_measures_memory_and_delivers_large_pushes() {
    let edge = edge_binary();
    let (ok, report) = bench(&[
        "idle",
        &edge,
        "--transport=ws",
        "--connections=40",
        "--burst-pushes=3",
        "--burst-body=65536",
        "--settle-secs=0",
        "--stall-secs=5",
    ]);
    assert!(ok, "{report:#}");
    assert_eq!(report["phases"][0]["delivered"], 3 * 40);
    assert_eq!(
        report["phases"][0]["per_connection"],
        serde_json::json!([3, 3])
    );
    assert!(number(&report, "/memory/idle") > 0);
    assert!(report["memory"]["after_per_connection"].is_number());
}

#[test]
fn connect_storm_with_heartbeats_holds_every_connection() {
    let edge = edge_binary();
    let (ok, report) = bench(&[
        "connect",
        &edge,
        "--connections=50",
        "--per-worker=20",
        "--connect-rate=500",
        "--heartbeat-secs=1",
        "--hold-secs=2",
    ]);
    assert!(ok, "{report:#}");
    assert_eq!(number(&report, "/counters/authed"), 50);
    assert_eq!(number(&report, "/counters/closed"), 0);
    assert_eq!(number(&report, "/connect/handshake/count"), 50);
    let (sent, replies) = (
        number(&report, "/counters/heartbeats"),
        number(&report, "/counters/heartbeat_replies"),
    );
    assert!(sent >= 50, "every connection sent a heartbeat: {sent}");
    assert!(
        replies + 50 >= sent && replies <= sent,
        "{replies} replies to {sent}"
    );
}

#[test]
fn missing_deliveries_fail_the_run() {
    let edge = edge_binary();
    // Every client joins another room than the one pushed to: nothing arrives.
    let (ok, report) = bench(&[
        "room",
        &edge,
        "--connections=10",
        "--pushes=3",
        "--modes=single",
        "--stall-secs=1",
        "--settle-secs=0",
        r#"--auth={"mid":{mid},"key":"{key}","room_id":"live://elsewhere","accepts":[1000]}"#,
    ]);
    assert!(!ok, "a run that lost every delivery must fail");
    assert_eq!(report["ok"], false);
    assert_eq!(report["phases"][0]["delivered"], 0);
    assert_eq!(report["phases"][0]["short_connections"], 10);
}

#[test]
fn httpdns_answers_over_http_and_in_process() {
    // The default client, then the spinning one with pipelined requests.
    for extra in [&[][..], &["--waiting=spin", "--pipeline=3"][..]] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let json = dir.path().join("httpdns.json");
        let status = Command::new(env!("CARGO_BIN_EXE_rim-bench"))
            .args([
                "httpdns",
                "--nodes=12",
                "--regions=3",
                "--iterations=500",
                "--connections=4",
                "--seconds=1",
            ])
            .args(extra)
            .arg(format!("--json={}", json.display()))
            .status()
            .expect("running rim-bench httpdns");
        assert!(status.success(), "{extra:?}");
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(json).expect("report")).expect("JSON");
        assert!(number(&report, "/over_http/answers") > 0, "{extra:?}");
        assert_eq!(number(&report, "/over_http/bad"), 0, "{extra:?}");
        assert_eq!(report["in_process"].as_array().map(Vec::len), Some(5));
    }
}
