//! Terraform itself against a real rim control plane on PostgreSQL, with the provider built from
//! this workspace (installed through a CLI configuration's `dev_overrides`, no registry).
//!
//! One test walks the lifecycle an infra team goes through: apply creates regions and keys
//! (checked through the admin API), a second plan is empty, changes made outside Terraform show as
//! drift and are repaired, an existing region is imported, a node is drained and found by the
//! data sources, invalid inputs fail at plan with clear messages, and destroy removes everything.
//! Another runs the modules' own `terraform test` suites, `terraform fmt -check` over the whole
//! `terraform/` folder and `terraform validate` where it works offline. Terraform must be installed
//! (`scripts/test.sh` checks for it): without it the tests fail, they do not skip.

use metrics_exporter_prometheus::PrometheusBuilder;
use rim_proto::schema::NodeRegistration;
use rim_store::Store;
use rim_store::postgres::PostgresStore;
use rim_testkit::postgres::TestPostgres;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

const ADMIN_KEY: &str = "terraform-test-admin-key";

/// A control plane on a fresh PostgreSQL database, and a directory for Terraform's files.
struct Rig {
    control: rim_control::RunningControl,
    store: Arc<dyn Store>,
    endpoint: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

/// The repository's `terraform/` folder.
fn terraform_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the provider crate lives in terraform/")
        .to_path_buf()
}

/// Terraform's diagnostics with line wrapping and box drawing undone (it wraps long messages at
/// ~78 columns, also when not on a terminal, and starts each line with `│`), so messages can be
/// looked for whole.
fn flat(output: &[u8]) -> String {
    String::from_utf8_lossy(output)
        .split_whitespace()
        .filter(|word| !["│", "╷", "╵"].contains(word))
        .collect::<Vec<_>>()
        .join(" ")
}

fn require_terraform() {
    let found = Command::new("terraform").arg("version").output();
    assert!(
        found.as_ref().is_ok_and(|out| out.status.success()),
        "terraform is not on PATH ({found:?}): install Terraform >= 1.6 (scripts/test.sh says how); \
         these tests run Terraform against a real control plane and cannot pass without it"
    );
}

async fn rig() -> Rig {
    require_terraform();
    let url = TestPostgres::shared().fresh_database();
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&url, rim_store::StoreSettings::default())
            .await
            .expect("PostgreSQL store"),
    );
    let config = rim_control::ControlConfig {
        control_admin_key: Some(ADMIN_KEY.into()),
        ..rim_control::ControlConfig::default()
    };
    let control = rim_control::start(
        config,
        "terraform-test-secret",
        store.clone(),
        Arc::new(rim_bus::memory::MemoryBus::new(1000)),
        PrometheusBuilder::new().build_recorder().handle(),
    )
    .await
    .expect("rim control starts");
    let endpoint = format!("http://{}", control.local_addr());
    let dir = tempfile::tempdir().expect("temporary directory");
    let provider_dir = Path::new(env!("CARGO_BIN_EXE_terraform-provider-rim"))
        .parent()
        .expect("the binary has a directory")
        .to_path_buf();
    std::fs::write(
        dir.path().join("terraformrc"),
        format!(
            "provider_installation {{\n  dev_overrides {{\n    \"rim/rim\" = {:?}\n  }}\n  direct {{}}\n}}\n",
            provider_dir.display().to_string()
        ),
    )
    .expect("CLI configuration written");
    Rig {
        control,
        store,
        endpoint,
        http: reqwest::Client::new(),
        dir,
    }
}

impl Rig {
    /// Runs terraform in `cwd` with the provider installed and configured through the environment.
    fn terraform(&self, cwd: &Path, args: &[&str]) -> Output {
        let data_dir = self.dir.path().join(format!(
            "data-{}",
            cwd.to_string_lossy().replace(['/', '\\'], "_")
        ));
        Command::new("terraform")
            .args(args)
            .current_dir(cwd)
            .env("TF_CLI_CONFIG_FILE", self.dir.path().join("terraformrc"))
            .env("TF_DATA_DIR", data_dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .env("RIM_ENDPOINT", &self.endpoint)
            .env("RIM_ADMIN_KEY", ADMIN_KEY)
            .output()
            .expect("terraform runs")
    }

    /// Runs terraform and requires exit status `code`; answers stdout.
    fn expect(&self, cwd: &Path, args: &[&str], code: i32) -> String {
        let out = self.terraform(cwd, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "terraform {args:?} in {}:\n{stdout}\n{}",
            cwd.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.endpoint))
            .bearer_auth(ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("control answers");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    async fn regions(&self) -> Vec<(String, f64, f64)> {
        let body = self
            .admin(reqwest::Method::GET, "/v1/admin/regions", None)
            .await;
        body["regions"]
            .as_array()
            .expect("regions listed")
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    r["latitude"].as_f64().unwrap_or(f64::NAN),
                    r["longitude"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect()
    }

    /// Names of the keys not revoked.
    async fn live_keys(&self) -> Vec<String> {
        let body = self
            .admin(reqwest::Method::GET, "/v1/admin/api-keys", None)
            .await;
        body["api_keys"]
            .as_array()
            .expect("keys listed")
            .iter()
            .filter(|k| k["revoked_at"].is_null())
            .map(|k| k["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

const ROOT: &str = r#"
terraform {
  required_providers {
    rim = { source = "rim/rim" }
  }
}

resource "rim_region" "bj" {
  name      = "bj"
  latitude  = 39.9042
  longitude = 116.4074
}

resource "rim_region" "fra" {
  name      = "fra"
  latitude  = 50.1109
  longitude = 8.6821
}

resource "rim_api_key" "bj_push" {
  name            = "bj-push"
  scopes          = ["push"]
  rate_per_second = 100
}

output "bj_push_secret" {
  value     = rim_api_key.bj_push.secret
  sensitive = true
}
"#;

const IMPORTED: &str = r#"
resource "rim_region" "usw" {
  name      = "usw"
  latitude  = 37.3382
  longitude = -121.8863
}
"#;

const IMPORTED_KEY: &str = r#"
resource "rim_api_key" "ops" {
  name            = "ops"
  scopes          = ["read"]
  target_kinds    = ["room"]
  rate_per_second = 5
}
"#;

const DRAIN: &str = r#"
resource "rim_node_drain" "edge1" {
  node_id = "bj-edge-1"
}

data "rim_nodes" "bj" {
  region     = rim_region.bj.name
  depends_on = [rim_node_drain.edge1]
}

data "rim_dns" "beijing" {
  latitude   = 39.9
  longitude  = 116.4
  depends_on = [rim_node_drain.edge1]
}

output "bj_nodes" {
  value = [for n in data.rim_nodes.bj.nodes : "${n.id}:${n.state}"]
}

output "dns_reason" {
  value = data.rim_dns.beijing.reason
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_plan_drift_import_drain_destroy_against_a_real_control_plane() {
    let rig = rig().await;
    let work = rig.dir.path().join("root");
    std::fs::create_dir(&work).expect("root module directory");
    std::fs::write(work.join("main.tf"), ROOT).expect("main.tf");

    // Apply creates the regions and the key.
    rig.expect(
        &work,
        &["apply", "-auto-approve", "-input=false", "-no-color"],
        0,
    );
    assert_eq!(
        rig.regions().await,
        vec![
            ("bj".into(), 39.9042, 116.4074),
            ("fra".into(), 50.1109, 8.6821)
        ]
    );
    assert_eq!(rig.live_keys().await, vec!["bj-push".to_owned()]);
    // The secret in the state is the key's: it authenticates (403: valid, but no read scope).
    let secret = rig.expect(&work, &["output", "-raw", "bj_push_secret"], 0);
    let status = rig
        .http
        .get(format!("{}/v1/online/total", rig.endpoint))
        .bearer_auth(secret.trim())
        .send()
        .await
        .expect("control answers")
        .status();
    assert_eq!(status, 403);

    // A second plan is empty.
    rig.expect(
        &work,
        &["plan", "-detailed-exitcode", "-input=false", "-no-color"],
        0,
    );

    // A region moved and a key revoked outside Terraform show as drift, and apply repairs both.
    rig.admin(
        reqwest::Method::PUT,
        "/v1/admin/regions/fra",
        Some(json!({"latitude": 10.0, "longitude": 8.6821})),
    )
    .await;
    let key_id = rig
        .admin(reqwest::Method::GET, "/v1/admin/api-keys", None)
        .await["api_keys"][0]["id"]
        .as_str()
        .expect("key id")
        .to_owned();
    rig.admin(
        reqwest::Method::DELETE,
        &format!("/v1/admin/api-keys/{key_id}"),
        None,
    )
    .await;
    let drift = rig.expect(
        &work,
        &["plan", "-detailed-exitcode", "-input=false", "-no-color"],
        2,
    );
    assert!(
        drift.contains("rim_region.fra will be updated in-place")
            && drift.contains("10 -> 50.1109"),
        "{drift}"
    );
    assert!(
        drift.contains("rim_api_key.bj_push will be created"),
        "{drift}"
    );
    rig.expect(
        &work,
        &["apply", "-auto-approve", "-input=false", "-no-color"],
        0,
    );
    assert_eq!(rig.regions().await[1], ("fra".into(), 50.1109, 8.6821));
    assert_eq!(rig.live_keys().await, vec!["bj-push".to_owned()]);

    // A region created outside Terraform is imported, after which nothing is to be done.
    rig.admin(
        reqwest::Method::POST,
        "/v1/admin/regions",
        Some(json!({"name": "usw", "latitude": 37.3382, "longitude": -121.8863})),
    )
    .await;
    std::fs::write(work.join("imported.tf"), IMPORTED).expect("imported.tf");
    // Creating it instead fails, and says how to take it over.
    let out = rig.terraform(
        &work,
        &["apply", "-auto-approve", "-input=false", "-no-color"],
    );
    let stderr = flat(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("region \"usw\" already exists; to manage it with Terraform, import it"),
        "{stderr}"
    );
    rig.expect(
        &work,
        &[
            "import",
            "-input=false",
            "-no-color",
            "rim_region.usw",
            "usw",
        ],
        0,
    );
    rig.expect(
        &work,
        &["plan", "-detailed-exitcode", "-input=false", "-no-color"],
        0,
    );

    // So is a key with limits (its secret stays unknown to Terraform: it is shown only at creation).
    let created = rig
        .admin(
            reqwest::Method::POST,
            "/v1/admin/api-keys",
            Some(json!({"name": "ops", "scopes": ["read"], "target_kinds": ["room"], "rate_per_second": 5})),
        )
        .await;
    let ops_id = created["id"].as_str().expect("key id").to_owned();
    std::fs::write(work.join("imported_key.tf"), IMPORTED_KEY).expect("imported_key.tf");
    rig.expect(
        &work,
        &[
            "import",
            "-input=false",
            "-no-color",
            "rim_api_key.ops",
            &ops_id,
        ],
        0,
    );
    rig.expect(
        &work,
        &["plan", "-detailed-exitcode", "-input=false", "-no-color"],
        0,
    );

    // A node of bj is drained declaratively and seen through the data sources.
    let registration = NodeRegistration {
        node_id: "bj-edge-1".into(),
        region: "bj".into(),
        latitude: 39.9,
        longitude: 116.4,
        hostname: "bj-edge-1.example.com".into(),
        addresses: vec!["192.0.2.10".into()],
        tcp_port: 3101,
        ws_port: 3102,
        wss_port: 3103,
        push_url: "http://192.0.2.10:3109".into(),
        weight: 10,
        boot_id: "boot-1".into(),
    };
    rig.store
        .register_node(&registration, 0)
        .await
        .expect("node registered");
    std::fs::write(work.join("drain.tf"), DRAIN).expect("drain.tf");
    rig.expect(
        &work,
        &["apply", "-auto-approve", "-input=false", "-no-color"],
        0,
    );
    let nodes = rig.admin(reqwest::Method::GET, "/v1/nodes", None).await;
    assert_eq!(nodes["nodes"][0]["state"], "draining");
    let outputs: Value = serde_json::from_str(&rig.expect(&work, &["output", "-json"], 0))
        .expect("outputs are JSON");
    assert_eq!(outputs["bj_nodes"]["value"], json!(["bj-edge-1:draining"]));
    assert!(
        outputs["dns_reason"]["value"].is_string(),
        "the only node is draining, so HTTPDNS explains the empty answer: {outputs}"
    );
    // The drain lifted outside Terraform is drift; applying drains again.
    rig.admin(
        reqwest::Method::POST,
        "/v1/admin/nodes/bj-edge-1/undrain",
        None,
    )
    .await;
    let drift = rig.expect(
        &work,
        &["plan", "-detailed-exitcode", "-input=false", "-no-color"],
        2,
    );
    assert!(
        drift.contains("rim_node_drain.edge1 will be created"),
        "{drift}"
    );
    rig.expect(
        &work,
        &["apply", "-auto-approve", "-input=false", "-no-color"],
        0,
    );
    rig.expect(
        &work,
        &["plan", "-detailed-exitcode", "-input=false", "-no-color"],
        0,
    );

    // The region with a live node cannot be destroyed: the control plane's refusal is shown.
    std::fs::remove_file(work.join("drain.tf")).expect("drain.tf removed");
    let out = rig.terraform(
        &work,
        &["destroy", "-auto-approve", "-input=false", "-no-color"],
    );
    let stderr = flat(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rim: deleting region \"bj\" failed")
            && stderr.contains("still has live nodes (bj-edge-1)"),
        "{stderr}"
    );
    // Once the node is gone, destroy removes everything.
    rig.store
        .set_node_state("bj-edge-1", rim_store::NodeState::Dead)
        .await
        .expect("node marked dead");
    rig.expect(
        &work,
        &["destroy", "-auto-approve", "-input=false", "-no-color"],
        0,
    );
    assert!(rig.regions().await.is_empty());
    assert!(rig.live_keys().await.is_empty());
    assert_eq!(
        rig.admin(reqwest::Method::GET, "/v1/nodes", None).await["nodes"],
        json!([])
    );
    rig.control.shutdown().await.expect("control stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_inputs_fail_at_plan_with_clear_messages() {
    let rig = rig().await;
    let work = rig.dir.path().join("invalid");
    std::fs::create_dir(&work).expect("directory");
    std::fs::write(
        work.join("main.tf"),
        r#"
terraform {
  required_providers {
    rim = { source = "rim/rim" }
  }
}

resource "rim_region" "bad" {
  name      = ""
  latitude  = 95
  longitude = -200
}

resource "rim_api_key" "bad" {
  name         = "svc"
  scopes       = ["push", "root"]
  target_kinds = ["everyone"]
}
"#,
    )
    .expect("main.tf");
    let out = rig.terraform(&work, &["plan", "-input=false", "-no-color"]);
    let stderr = flat(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for message in [
        "Error: name must not be empty",
        "Error: latitude out of range",
        "`latitude` is 95; it must be between -90 and 90 (degrees).",
        "Error: longitude out of range",
        "Error: unknown scopes value \"root\"",
        "`scopes` may hold only: push, read, admin.",
        "Error: unknown target_kinds value \"everyone\"",
    ] {
        assert!(
            stderr.contains(message),
            "missing {message:?} in:\n{stderr}"
        );
    }
    assert!(rig.regions().await.is_empty(), "nothing was created");

    // A wrong admin key is reported as such at the first call.
    std::fs::write(
        work.join("main.tf"),
        r#"
terraform {
  required_providers {
    rim = { source = "rim/rim" }
  }
}

provider "rim" {
  admin_key = "not-the-admin-key"
}

resource "rim_region" "ok" {
  name      = "ok"
  latitude  = 1
  longitude = 1
}
"#,
    )
    .expect("main.tf");
    let out = rig.terraform(
        &work,
        &["apply", "-auto-approve", "-input=false", "-no-color"],
    );
    let stderr = flat(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rim: creating region \"ok\" failed") && stderr.contains("HTTP 401"),
        "{stderr}"
    );
    rig.control.shutdown().await.expect("control stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_tests_fmt_and_validate_pass() {
    let rig = rig().await;
    let root = terraform_root();
    rig.expect(&root, &["fmt", "-check", "-recursive", "-diff"], 0);
    // No `terraform init`: the only provider comes from dev_overrides, which needs none (init
    // would ask the registry about rim/rim).
    for module in ["modules/edge-cloud-init", "modules/region"] {
        let dir = root.join(module);
        rig.expect(&dir, &["validate", "-no-color"], 0);
        let out = rig.expect(&dir, &["test", "-no-color"], 0);
        assert!(out.contains("Success!"), "{out}");
    }
    // The region module's test applied and destroyed its objects.
    assert!(rig.regions().await.is_empty());
    rig.control.shutdown().await.expect("control stops");
}
