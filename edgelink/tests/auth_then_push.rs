//! A push sent the moment a client has its auth reply reaches it: the edge holds the reply until the
//! control plane has accepted the session batch carrying the connect, so control already knows the
//! session when the business push arrives. goim gets this by registering before answering; before
//! this, rim answered first and reported ~10-20 ms later, and such a push was answered "offline".

mod common;

use std::sync::Arc;

use common::{Business, TestEdge, TestJob, link_config, memory_store, start_control, unused_addr};
use rim_bus::memory::MemoryBus;

const ITERATIONS: i64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_right_after_the_auth_reply_is_delivered_every_time() {
    let store = memory_store();
    let bus = Arc::new(MemoryBus::new(1_000));
    let control = start_control(unused_addr(), store.clone(), bus.clone(), None).await;
    // The bound is generous here: this test is about the acknowledgement, not about how long a
    // loaded machine may take to give it.
    let edge = TestEdge::start_with(
        link_config(control.local_addr(), "edge-auth-push"),
        None,
        |c| c.edge_auth_report_timeout_ms = common::PATIENCE.as_millis() as u64,
    )
    .await;
    let job = TestJob::start(control.local_addr(), store.clone(), &bus);
    let business = Business::new(control.local_addr());

    for i in 0..ITERATIONS {
        let mid = 10_000 + i;
        let mut client = edge.client().await;
        client.login(mid, &format!("fresh-{i}"), "").await;
        let body = format!("right after auth {i}");
        let report = business
            .push(
                "mids",
                &format!("operation=1000&mids={mid}"),
                body.as_bytes(),
            )
            .await;
        assert_eq!(report["sessions"], 1, "iteration {i}: {report}");
        let packet = client.recv().await;
        assert_eq!(
            (packet.op, &packet.body[..]),
            (1000, body.as_bytes()),
            "iteration {i}"
        );
    }

    assert!(edge.shutdown().await, "reporter did not flush");
    job.stop().await;
    control.shutdown().await.unwrap();
}
