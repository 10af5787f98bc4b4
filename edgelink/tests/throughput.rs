//! How fast the reporter moves session events into the control plane (memory store), driven
//! directly through its `EdgeEvents` methods: every connect must arrive, the rate is printed.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{link_config, memory_store, start_control, unused_addr};
use rim_bus::memory::MemoryBus;
use rim_edge::channel::Channel;
use rim_edge::{EdgeAddrs, EdgeEvents, Identity};
use rim_edgelink::SessionReporter;

const CONNECTIONS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_connects_and_disconnects_reach_the_store() {
    let store = memory_store();
    let control = start_control(
        unused_addr(),
        store.clone(),
        Arc::new(MemoryBus::new(10)),
        None,
    )
    .await;
    let link = link_config(control.local_addr(), "edge-throughput");
    let reporter = SessionReporter::new(link.clone());
    let loopback = "127.0.0.1:9".parse().unwrap();
    let addrs = EdgeAddrs {
        tcp: loopback,
        ws: loopback,
        tls: None,
        wss: None,
        internal: loopback,
    };
    reporter
        .start(&common::edge_credentials(&link), &addrs)
        .unwrap();

    let channels: Vec<Channel> = (1..=CONNECTIONS)
        .map(|id| {
            let identity = Identity {
                mid: id as i64,
                key: format!("k{id}"),
                room: "live://1".into(),
                ..Identity::default()
            };
            Channel::new(
                id,
                Arc::from(identity.key.as_str()),
                &identity,
                "10.0.0.1".parse().unwrap(),
            )
        })
        .collect();
    let started = Instant::now();
    for channel in &channels {
        reporter.connected(channel);
    }
    let queued = started.elapsed();
    common::eventually("every connect applied", || async {
        (reporter.unsent() == 0).then_some(())
    })
    .await;
    let applied = started.elapsed();
    println!(
        "{CONNECTIONS} connects: queued in {queued:?} ({:.0}/s on the connection side), applied in {applied:?} ({:.0}/s)",
        CONNECTIONS as f64 / queued.as_secs_f64(),
        CONNECTIONS as f64 / applied.as_secs_f64()
    );
    // A sample of users across the whole range (time 0: anything stored is live).
    let mids: Vec<i64> = (1..=CONNECTIONS as i64).step_by(997).collect();
    assert_eq!(
        store.sessions_by_mids(&mids, 0).await.unwrap().len(),
        mids.len()
    );

    let started = Instant::now();
    for channel in &channels {
        reporter.disconnected(channel, true);
    }
    common::eventually("every disconnect applied", || async {
        (reporter.unsent() == 0).then_some(())
    })
    .await;
    println!(
        "{CONNECTIONS} disconnects applied in {:?}",
        started.elapsed()
    );
    assert!(store.sessions_by_mids(&mids, 0).await.unwrap().is_empty());
    assert!(reporter.shutdown(common::PATIENCE).await);
    control.shutdown().await.unwrap();
}
