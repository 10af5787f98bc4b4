//! The control plane is down when the edge starts: the edge serves clients anyway, and what happened
//! meanwhile reaches control once it is up.

mod common;

use std::sync::Arc;

use common::{
    Business, TestEdge, TestJob, link_config, memory_store, session, session_appears,
    start_control, unused_addr,
};
use rim_bus::memory::MemoryBus;

#[tokio::test]
async fn the_edge_works_without_control_and_reports_everything_once_control_is_up() {
    let control_addr = unused_addr();
    let edge = TestEdge::start(link_config(control_addr, "edge-outage"), None).await;

    // Clients authenticate and come and go while control is unreachable.
    let mut stays = edge.client().await;
    stays.login(321, "stays", "live://9").await;
    let mut leaves = edge.client().await;
    leaves.login(322, "leaves", "").await;
    drop(leaves);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(edge.reporter.unsent() >= 1, "the connect waits for control");
    stays.send(rim_proto::op::HEARTBEAT, b"").await;
    assert_eq!(stays.recv().await.op, rim_proto::op::HEARTBEAT_REPLY);

    let store = memory_store();
    let bus = Arc::new(MemoryBus::new(1_000));
    let control = start_control(control_addr, store.clone(), bus.clone(), None).await;
    let job = TestJob::start(control.local_addr(), store.clone(), &bus);
    let stored = session_appears(&store, "stays").await;
    assert_eq!((stored.mid, stored.room.as_str()), (321, "live://9"));
    assert!(session(&store, "leaves").await.is_none());

    let report = Business::new(control_addr)
        .push("mids", "operation=1000&mids=321", b"after the outage")
        .await;
    assert_eq!(report["sessions"], 1, "{report}");
    assert_eq!(stays.recv().await.body, &b"after the outage"[..]);

    assert!(edge.shutdown().await);
    job.stop().await;
    control.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_control_plane_that_lost_its_store_gets_the_live_sessions_again() {
    let store = memory_store();
    let bus = Arc::new(MemoryBus::new(1_000));
    let control = start_control(unused_addr(), store.clone(), bus.clone(), None).await;
    let addr = control.local_addr();
    let edge = TestEdge::start(link_config(addr, "edge-amnesia"), None).await;
    let mut client = edge.client().await;
    client.login(11, "remembered", "").await;
    session_appears(&store, "remembered").await;

    // Control restarts on an empty store: it answers 404 to the next heartbeat, and the edge
    // registers again and reports its connection anew.
    control.shutdown().await.unwrap();
    let fresh = memory_store();
    let control = start_control(addr, fresh.clone(), bus, None).await;
    let stored = session_appears(&fresh, "remembered").await;
    assert_eq!(stored.mid, 11);

    assert!(edge.shutdown().await);
    assert!(
        session(&fresh, "remembered").await.is_none(),
        "shutdown reported the disconnect"
    );
    control.shutdown().await.unwrap();
}
