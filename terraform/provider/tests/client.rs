//! The provider's API client against a real rim control (in-process, memory store): what each
//! call answers, and how the control plane's errors come back (status and message) so resources
//! can tell "gone" from a failure and report the control plane's own words.

use metrics_exporter_prometheus::PrometheusBuilder;
use rim_store::Store;
use std::sync::Arc;
use terraform_provider_rim::client::{Client, DnsQuery, NewKey};
use tf_provider::Diagnostics;

const ADMIN_KEY: &str = "client-test-admin-key";

async fn control() -> (rim_control::RunningControl, Arc<dyn Store>, String) {
    let store: Arc<dyn Store> = Arc::new(rim_store::memory::MemoryStore::new(
        rim_store::StoreSettings::default(),
    ));
    let config = rim_control::ControlConfig {
        control_admin_key: Some(ADMIN_KEY.into()),
        ..rim_control::ControlConfig::default()
    };
    let control = rim_control::start(
        config,
        "client-test-secret",
        store.clone(),
        Arc::new(rim_bus::memory::MemoryBus::new(100)),
        PrometheusBuilder::new().build_recorder().handle(),
    )
    .await
    .expect("rim control starts");
    let endpoint = format!("http://{}", control.local_addr());
    (control, store, endpoint)
}

#[tokio::test]
async fn regions_round_trip_and_conflicts_keep_the_control_planes_message() {
    let (control, _store, endpoint) = control().await;
    let client = Client::new(&endpoint, ADMIN_KEY).expect("client");

    assert_eq!(client.region("bj").await, Ok(None));
    let created = client
        .create_region("bj", 39.9042, 116.4074)
        .await
        .expect("created");
    assert_eq!((created.name.as_str(), created.latitude), ("bj", 39.9042));
    assert_eq!(created.topic, None, "the memory bus has no topics");
    let taken = client.create_region("bj", 1.0, 1.0).await.unwrap_err();
    assert_eq!(taken.status, Some(409));
    assert_eq!(taken.message, "region \"bj\" already exists");
    let moved = client
        .put_region("bj", 40.0, 116.4074)
        .await
        .expect("moved");
    assert_eq!(moved.latitude, 40.0);
    assert_eq!(client.region("bj").await.expect("read"), Some(moved));

    client.delete_region("bj").await.expect("deleted");
    let gone = client.delete_region("bj").await.unwrap_err();
    assert!(gone.is_not_found(), "{gone:?}");

    // A name that needs escaping reaches the control plane intact.
    let odd = client
        .create_region("us west/2", 37.3, -121.9)
        .await
        .expect("created");
    assert_eq!(client.region("us west/2").await.expect("read"), Some(odd));
    control.shutdown().await.expect("control stops");
}

#[tokio::test]
async fn keys_are_created_with_a_secret_read_without_it_and_revoked() {
    let (control, _store, endpoint) = control().await;
    let client = Client::new(&endpoint, ADMIN_KEY).expect("client");
    let created = client
        .create_api_key(&NewKey {
            name: "svc".into(),
            scopes: vec!["push".into()],
            target_kinds: None,
            rate_per_second: None,
            rate_burst: None,
        })
        .await
        .expect("created");
    assert!(created.key.id.starts_with("key_") && created.secret.len() > 16);
    let read = client
        .api_key(&created.key.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        (read.name.as_str(), read.scopes.clone()),
        ("svc", vec!["push".to_owned()])
    );
    assert_eq!(read.revoked_at, None);
    client
        .revoke_api_key(&created.key.id)
        .await
        .expect("revoked");
    let read = client
        .api_key(&created.key.id)
        .await
        .expect("read")
        .expect("listed");
    assert!(read.revoked_at.is_some());
    assert_eq!(client.api_key("key_nope").await, Ok(None));

    // The control plane's refusal of an unknown scope comes back as a 400 with its reason.
    let refused = client
        .create_api_key(&NewKey {
            name: "svc".into(),
            scopes: vec!["root".into()],
            target_kinds: None,
            rate_per_second: None,
            rate_burst: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.status, Some(400));
    assert!(refused.message.contains("root"), "{}", refused.message);
    control.shutdown().await.expect("control stops");
}

#[tokio::test]
async fn wrong_keys_and_unreachable_endpoints_become_diagnostics_that_say_what_to_check() {
    let (control, _store, endpoint) = control().await;
    let wrong = Client::new(&endpoint, "not-the-key").expect("client");
    let err = wrong.nodes().await.unwrap_err();
    assert_eq!(err.status, Some(401));
    let mut diags = Diagnostics::default();
    err.report(&mut diags, "listing nodes");
    assert_eq!(diags.errors[0].summary, "rim: listing nodes failed");
    assert!(
        diags.errors[0]
            .detail
            .contains("(HTTP 401). The admin key was not accepted"),
        "{}",
        diags.errors[0].detail
    );
    control.shutdown().await.expect("control stops");

    // The control plane is gone now: no answer at all.
    let err = wrong.nodes().await.unwrap_err();
    assert_eq!(err.status, None);
    assert!(
        err.message
            .starts_with("cannot reach rim control at http://"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn nodes_drains_and_dns_answers() {
    let (control, store, endpoint) = control().await;
    let client = Client::new(&endpoint, ADMIN_KEY).expect("client");
    let registration = rim_proto::schema::NodeRegistration {
        node_id: "fra-1".into(),
        region: "fra".into(),
        latitude: 50.1,
        longitude: 8.7,
        hostname: "fra-1.example.com".into(),
        addresses: vec!["192.0.2.7".into()],
        tcp_port: 3101,
        ws_port: 3102,
        wss_port: 3103,
        push_url: "http://192.0.2.7:3109".into(),
        weight: 10,
        boot_id: "b".into(),
    };
    // The memory store judges liveness by the caller's clock: register the node as seen now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        });
    store
        .register_node(&registration, now)
        .await
        .expect("registered");

    let answer = client
        .dns(&DnsQuery {
            location: Some((50.0, 8.0)),
            region: None,
            platform: Some("web".into()),
        })
        .await
        .expect("answer");
    assert_eq!(answer.nodes, vec!["fra-1.example.com".to_owned()]);
    assert_eq!(answer.node_ids, vec!["fra-1".to_owned()]);
    assert_eq!(
        (answer.tcp_port, answer.ws_port, answer.wss_port),
        (3101, 3102, 3103)
    );
    assert_eq!(answer.reason, None);

    client.set_drained("fra-1", true).await.expect("drained");
    let nodes = client.nodes().await.expect("nodes");
    assert_eq!(
        (nodes[0].state.as_str(), nodes[0].drained_by_admin),
        ("draining", true)
    );
    let answer = client.dns(&DnsQuery::default()).await.expect("answer");
    assert!(
        answer.nodes.is_empty() && answer.reason.is_some(),
        "{answer:?}"
    );
    client.set_drained("fra-1", false).await.expect("undrained");
    assert_eq!(client.nodes().await.expect("nodes")[0].state, "active");
    let err = client.set_drained("nope", true).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    control.shutdown().await.expect("control stops");
}
