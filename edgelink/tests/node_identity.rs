//! Node identity end to end, with the real control plane: who may push to an edge (a compromised
//! edge may not, nor a job worker of another region, nor the cluster secret, nor a forged token),
//! a key rotation the edges follow by themselves, a job worker pushing to an edge over TLS, and a
//! flood of distinct room names that leaves the node alive and its sessions intact (PostgreSQL).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Business, Cluster, REGION, SECRET, TestEdge, TestJob, control_config, link_config,
    memory_store, session_appears, start_control_with, unused_addr,
};
use prost::Message;
use rim_bus::memory::MemoryBus;
use rim_control::ControlConfig;
use rim_edgelink::NodeCredentials;
use rim_proto::node_token::NodeRole;
use rim_proto::schema::edge_push::Target;
use rim_proto::schema::{EdgeKeys, EdgePush, EdgePushRequest};
use rim_store::{NodeState, Store};

/// A key push of op 1000 to `key`, as a job worker sends it.
fn push_to(key: &str, body: &[u8]) -> Vec<u8> {
    EdgePushRequest {
        pushes: vec![EdgePush {
            message_id: format!("m-{}", rand_suffix()),
            operation: 1000,
            body: body.to_vec().into(),
            record: 0,
            position: None,
            receipt_target: String::new(),
            target: Some(Target::Keys(EdgeKeys {
                keys: vec![key.into()],
            })),
        }],
    }
    .encode_to_vec()
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Posts a push request to `edge` with `token`; the status and the answer's text.
async fn post(edge: &TestEdge, token: &str, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/internal/push",
            edge.handle.addrs().internal
        ))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A credential enrolled at `control` (waits until it is).
async fn enrolled(
    role: NodeRole,
    node: &str,
    region: &str,
    control: std::net::SocketAddr,
) -> Arc<NodeCredentials> {
    let settings = link_config(control, node).credential_settings();
    let credentials = NodeCredentials::new(role, node, region, SECRET, &settings).unwrap();
    credentials.spawn(rim_edgelink::credential::CancellationToken::new());
    credentials.ready().await;
    credentials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_job_token_of_the_edges_region_pushes_to_it() {
    let cluster = Cluster::start("edge-a").await;
    let control = cluster.control.local_addr();
    let victim = TestEdge::start(link_config(control, "edge-b"), None).await;
    victim.credentials.ready().await;
    let mut client = victim.client().await;
    client.login(5, "victim-client", "").await;

    // The compromised edge-a's own token: an edge's, not a job worker's.
    cluster.edge.credentials.ready().await;
    let attacker = cluster.edge.credentials.token().get();
    let (status, reason) = post(&victim, &attacker, push_to("victim-client", b"x")).await;
    assert_eq!(status, 401, "{reason}");
    assert!(reason.contains("job"), "{reason}");
    // A job worker of another region.
    let elsewhere = enrolled(NodeRole::Job, "job-far", "far-region", control).await;
    let (status, reason) = post(
        &victim,
        &elsewhere.token().get(),
        push_to("victim-client", b"x"),
    )
    .await;
    assert_eq!(status, 401);
    assert!(reason.contains("far-region"), "{reason}");
    // The cluster secret is the enrollment credential, not a push credential.
    let (status, _) = post(&victim, SECRET, push_to("victim-client", b"x")).await;
    assert_eq!(status, 401);
    // A job token whose signature was tampered with.
    let job = enrolled(NodeRole::Job, "job-near", REGION, control).await;
    let real = job.token().get().to_string();
    // One signature character changed for another, inside the signature (the last character
    // carries padding bits, so changing it could leave the bytes as they were).
    let at = real.len() - 10;
    let swapped = if &real[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &real[..at], &real[at + 1..]);
    let (status, _) = post(&victim, &forged, push_to("victim-client", b"x")).await;
    assert_eq!(status, 401);
    // The real job token of the region pushes.
    let (status, answer) = post(&victim, &real, push_to("victim-client", b"hello")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(client.recv().await.body, &b"hello"[..]);

    assert!(victim.shutdown().await);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_follow_a_key_rotation_by_themselves() {
    let store = memory_store();
    let bus = Arc::new(MemoryBus::new(100));
    // A new signing key at every refresh of control's key cache (10 s).
    let config = ControlConfig {
        control_node_key_rotation_ms: 1_000,
        ..control_config()
    };
    let control = start_control_with(config, store.clone(), bus).await;
    let addr = control.local_addr();
    let edge = TestEdge::start(link_config(addr, "edge-rot"), None).await;
    edge.credentials.ready().await;
    let mut client = edge.client().await;
    client.login(8, "rotated", "").await;
    let before = store.node_signing_keys().await.unwrap();
    assert_eq!(before.len(), 1);
    // Once control's cache turns over, a job enrolling gets a token of the next generation, which
    // the edge has never been given.
    tokio::time::sleep(rim_control::enroll::KEY_CACHE + Duration::from_millis(500)).await;
    let job = enrolled(NodeRole::Job, "job-rot", REGION, addr).await;
    let after = store.node_signing_keys().await.unwrap();
    assert!(after.len() >= 2, "{after:?}");
    let token = job.token().get().to_string();
    // The first push makes the edge fetch the keys; a retry (what job workers do) passes.
    let mut delivered = false;
    for _ in 0..20 {
        let (status, _) = post(&edge, &token, push_to("rotated", b"after rotation")).await;
        if status == 200 {
            delivered = true;
            break;
        }
        assert_eq!(status, 401);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(delivered, "the edge never learned the new key");
    assert_eq!(client.recv().await.body, &b"after rotation"[..]);
    assert!(edge.shutdown().await);
    control.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_worker_pushes_to_an_edge_over_tls() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("edge.pem"), dir.path().join("edge.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();

    let store = memory_store();
    let bus = Arc::new(MemoryBus::new(100));
    let control = start_control_with(control_config(), store.clone(), bus.clone()).await;
    let addr = control.local_addr();
    let internal = unused_addr();
    let link = rim_edgelink::LinkConfig {
        edge_push_url: Some(format!("https://localhost:{}", internal.port())),
        ..link_config(addr, "edge-tls")
    };
    let (tls_cert, tls_key) = (cert.clone(), key);
    let edge = TestEdge::start_with(link, None, move |c| {
        c.edge_internal_listen = internal.to_string();
        c.internal.edge_internal_tls_cert = Some(tls_cert);
        c.internal.edge_internal_tls_key = Some(tls_key);
    })
    .await;
    let job = TestJob::start_with(addr, store.clone(), &bus, |c| {
        c.job_edge_ca_file = Some(cert);
    });
    let mut client = edge.client().await;
    client.login(31, "over-tls", "").await;
    session_appears(&store, "over-tls").await;
    let report = Business::new(addr)
        .push("mids", "operation=1000&mids=31", b"encrypted hop")
        .await;
    assert_eq!(report["sessions"], 1, "{report}");
    assert_eq!(client.recv().await.body, &b"encrypted hop"[..]);
    // The internal port speaks nothing but TLS.
    let plain = reqwest::Client::new()
        .get(format!("http://localhost:{}/healthz", internal.port()))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    assert!(edge.shutdown().await);
    job.stop().await;
    control.shutdown().await.unwrap();
}

/// Connections in the room flood: each in its own long, distinct room.
const FLOOD: usize = 4_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_room_names_leaves_the_node_alive_and_its_sessions_intact() {
    let database = rim_testkit::postgres::TestPostgres::shared().fresh_database();
    let store: Arc<dyn Store> = Arc::new(
        rim_store::postgres::PostgresStore::connect(&database, Default::default())
            .await
            .unwrap(),
    );
    // Every room listed would make a heartbeat of ~1 MB, twice the body limit: the failure this
    // guards against (the node declared dead with all its sessions).
    let config = ControlConfig {
        control_edge_body_limit: 512 * 1024,
        control_node_timeout_ms: 2_000,
        control_sweep_interval_ms: 200,
        ..control_config()
    };
    let control = start_control_with(config, store.clone(), Arc::new(MemoryBus::new(100))).await;
    let link = rim_edgelink::LinkConfig {
        edge_node_heartbeat_ms: 200,
        ..link_config(control.local_addr(), "edge-flood")
    };
    let edge = Arc::new(TestEdge::start(link, None).await);
    let mut clients = Vec::with_capacity(FLOOD);
    for wave in 0..FLOOD / 200 {
        let mut joins = tokio::task::JoinSet::new();
        for i in wave * 200..(wave + 1) * 200 {
            let edge = edge.clone();
            joins.spawn(async move {
                let mut client = edge.client().await;
                let room = format!("live://{i:05}-{}", "r".repeat(230));
                client
                    .login(i as i64 + 1, &format!("flood-{i}"), &room)
                    .await;
                client
            });
        }
        while let Some(client) = joins.join_next().await {
            clients.push(client.unwrap());
        }
    }
    let live = || async {
        let keys: Vec<String> = (0..FLOOD).map(|i| format!("flood-{i}")).collect();
        store
            .sessions_by_keys(&keys, rim_control::now_ms())
            .await
            .unwrap()
            .len()
    };
    common::eventually("every session reported", || async {
        (live().await == FLOOD).then_some(())
    })
    .await;
    // Several node timeouts later the node is still alive and every session still there.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let nodes = store.nodes().await.unwrap();
    let node = nodes.iter().find(|n| n.id == "edge-flood").unwrap();
    assert_eq!(node.state, NodeState::Active);
    assert_eq!(node.connection_count, FLOOD as u64);
    assert_eq!(live().await, FLOOD);
    // The room statistics that reached control are the bounded list.
    let rooms = store.top_rooms("live", usize::MAX).await.unwrap();
    assert_eq!(rooms.len(), 1_000);
    drop(clients);
    match Arc::try_unwrap(edge) {
        Ok(edge) => assert!(edge.shutdown().await),
        Err(_) => panic!("the edge is still shared"),
    }
    control.shutdown().await.unwrap();
}
