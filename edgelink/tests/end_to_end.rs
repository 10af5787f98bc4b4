//! The whole path with real sockets: a goim client authenticates on an edge, the reporter tells the
//! control plane, a business push goes control → bus → job worker → edge → client.

mod common;

use common::{Cluster, session, session_appears, session_disappears};
use rim_proto::op;

#[tokio::test]
async fn pushes_to_a_user_and_a_room_reach_the_client_and_a_disconnect_removes_the_session() {
    let cluster = Cluster::start("edge-e2e").await;
    let mut client = cluster.edge.client().await;
    client.login(123, "key-123", "live://1000").await;
    let stored = session_appears(&cluster.store, "key-123").await;
    assert_eq!(
        (
            stored.mid,
            stored.node_id.as_str(),
            stored.room.as_str(),
            stored.platform.as_str()
        ),
        (123, "edge-e2e", "live://1000", "web")
    );
    assert_eq!(stored.accepts, [1000]);

    let report = cluster
        .business
        .push("mids", "operation=1000&mids=123", b"hi")
        .await;
    assert_eq!(report["sessions"], 1, "{report}");
    let packet = client.recv().await;
    assert_eq!((packet.op, &packet.body[..]), (1000, &b"hi"[..]));

    cluster
        .business
        .push(
            "room",
            "operation=1001&type=live&room=1000",
            b"\x00room bytes\xff",
        )
        .await;
    let packet = client.recv().await;
    assert_eq!(
        (packet.op, &packet.body[..]),
        (1001, &b"\x00room bytes\xff"[..])
    );

    let report = cluster
        .business
        .push("mids", "operation=1000&mids=123,999", b"x")
        .await;
    assert_eq!(report["offline_mids"], serde_json::json!([999]), "{report}");
    assert_eq!(client.recv().await.body, &b"x"[..]);

    // The node and its load as control sees them.
    let node = common::eventually("a heartbeat with the connection", || async {
        let nodes = cluster.store.nodes().await.unwrap();
        nodes
            .into_iter()
            .find(|n| n.id == "edge-e2e" && n.connection_count == 1)
    })
    .await;
    assert_eq!(node.region, common::REGION);
    assert_eq!(
        node.push_url,
        format!("http://{}", cluster.edge.handle.addrs().internal)
    );
    assert_eq!(node.tcp_port, cluster.edge.handle.addrs().tcp.port());
    let rooms = cluster
        .store
        .room_online(&["live://1000".into()])
        .await
        .unwrap();
    assert_eq!(rooms["live://1000"], 1);

    drop(client);
    session_disappears(&cluster.store, "key-123").await;
    let report = cluster
        .business
        .push("mids", "operation=1000&mids=123", b"gone")
        .await;
    assert_eq!(report["offline_mids"], serde_json::json!([123]), "{report}");
    cluster.stop().await;
}

#[tokio::test]
async fn a_room_change_moves_the_session_and_room_pushes_follow_it() {
    let cluster = Cluster::start("edge-rooms").await;
    let mut client = cluster.edge.client().await;
    client.login(5, "key-5", "live://1").await;
    session_appears(&cluster.store, "key-5").await;
    client.send(op::CHANGE_ROOM, b"live://2").await;
    assert_eq!(client.recv().await.op, op::CHANGE_ROOM_REPLY);
    common::eventually("the session in the new room", || async {
        session(&cluster.store, "key-5")
            .await
            .filter(|s| s.room == "live://2")
    })
    .await;
    cluster
        .business
        .push("room", "operation=1000&type=live&room=2", b"to room 2")
        .await;
    assert_eq!(client.recv().await.body, &b"to room 2"[..]);
    cluster.stop().await;
}

#[tokio::test]
async fn connect_disconnect_connect_of_one_key_ends_with_the_latest_connection() {
    let cluster = Cluster::start("edge-order").await;
    let mut first = cluster.edge.client().await;
    first.login(9, "same-key", "").await;
    drop(first);
    let mut second = cluster.edge.client().await;
    second.login(9, "same-key", "").await;
    // A third connection takes the key over while the second is still open.
    let mut third = cluster.edge.client().await;
    third.login(9, "same-key", "").await;
    second.closed().await;
    common::eventually("everything reported", || async {
        (cluster.edge.reporter.unsent() == 0).then_some(())
    })
    .await;
    let stored = session_appears(&cluster.store, "same-key").await;
    assert_eq!(stored.connection_id, 3, "the latest of three connections");
    cluster
        .business
        .push("keys", "operation=1000&keys=same-key", b"latest")
        .await;
    assert_eq!(third.recv().await.body, &b"latest"[..]);
    drop(third);
    session_disappears(&cluster.store, "same-key").await;
    cluster.stop().await;
}

#[tokio::test]
async fn live_sessions_are_renewed_before_the_store_expires_them_and_drain_is_reported() {
    let store: std::sync::Arc<dyn rim_store::Store> = std::sync::Arc::new(
        rim_store::memory::MemoryStore::new(rim_store::StoreSettings {
            session_ttl_ms: 600,
        }),
    );
    let link = |control, node: &str| rim_edgelink::LinkConfig {
        edge_session_renew_ms: 150,
        ..common::link_config(control, node)
    };
    let cluster = Cluster::start_with(link, "edge-renew", store).await;
    let mut client = cluster.edge.client().await;
    client.login(44, "renewed", "").await;
    session_appears(&cluster.store, "renewed").await;
    // Several TTLs later the session is still there: renewals kept it alive.
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            session(&cluster.store, "renewed").await.is_some(),
            "session expired"
        );
    }

    cluster.edge.reporter.drain().await;
    let nodes = cluster.store.nodes().await.unwrap();
    let node = nodes.iter().find(|n| n.id == "edge-renew").unwrap();
    assert_eq!(node.state, rim_store::NodeState::Draining);
    cluster.stop().await;
}
