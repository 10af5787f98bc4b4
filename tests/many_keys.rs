//! A push to many keys, end to end through the production path (real `rim control` on PostgreSQL
//! and the Kafka-protocol broker, a `rim job` per region, three edges in two regions, rim-client
//! sessions that count what arrived): control's producer sends the records of one push that share
//! a partition as one Kafka record, and every key must still get every push exactly once, in order.
//!
//! The 200 keys mix the cases a grouped record must keep apart: two keys per user (records keyed by
//! the user, each with its own stream position and receipt target), anonymous sessions (user 0:
//! records keyed by the key, without a position), and keys spread over every edge of both regions
//! (so one grouped record holds keys of several edges, and one edge gets keys from several).

mod cluster;

use cluster::recorder::Recorder;
use cluster::{Cluster, OPERATION, PATIENCE};
use rim_bus::BusConsumer;
use rim_bus::kafka::{KafkaConsumer, KafkaSettings};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// Keys of the push.
const KEYS: usize = 200;
/// Pushes sent to all of them.
const PUSHES: usize = 5;
/// Edges of the deployment (from `Cluster::two_regions`).
const EDGES: [&str; 3] = ["east-1", "east-2", "west-1"];

/// The Kafka records of `region`'s topic (distinct log positions: a grouped record's pushes share
/// one), read by a group of their own, and the pushes they held.
async fn records_on_the_broker(cluster: &Cluster, region: &str, pushes: usize) -> (usize, usize) {
    let settings = KafkaSettings::new(cluster.kafka.bootstrap());
    let mut consumer = KafkaConsumer::new(&settings, region, "count-records")
        .await
        .expect("counting consumer");
    let mut positions = BTreeSet::new();
    let mut read = 0;
    tokio::time::timeout(PATIENCE, async {
        while read < pushes {
            let batch = consumer
                .next_batch(10_000)
                .await
                .expect("reading the topic");
            read += batch.len();
            positions.extend(batch.iter().map(|push| push.position));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{region}: only {read} of {pushes} pushes on the broker"));
    (positions.len(), read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_a_200_key_push_gets_it_exactly_once() {
    let cluster = Cluster::two_regions().await;
    let mut clients: Vec<(String, &str, Recorder)> = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let key = format!("many-{i}");
        // Every tenth key is anonymous; the others pair up, two keys per user.
        let mid = if i % 10 == 9 { 0 } else { 1_000 + i as i64 / 2 };
        let edge = EDGES[i % EDGES.len()];
        let recorder = cluster.client(mid, &key, "", &[cluster.tcp_of(edge)]).await;
        clients.push((key, edge, recorder));
    }
    let keys: Vec<&str> = clients.iter().map(|(key, _, _)| key.as_str()).collect();
    for n in 0..PUSHES {
        let (status, answer) = cluster
            .v1(
                "/v1/push/keys",
                json!({"keys": keys, "operation": OPERATION, "body_text": format!("many:{n}")}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["sessions"], KEYS, "{answer}");
        assert_eq!(answer["records"], KEYS, "{answer}");
    }

    let deadline = tokio::time::Instant::now() + PATIENCE;
    for (_, _, recorder) in &clients {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        recorder.wait_for("many", PUSHES, left).await;
    }
    // Let duplicates and misdeliveries arrive before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (key, edge, recorder) in &clients {
        let tally = recorder.tally("many", PUSHES);
        assert_eq!(
            (tally.received, tally.duplicated, tally.out_of_order),
            (PUSHES, 0, 0),
            "key {key} on {edge} got {tally:?}\n{}",
            cluster.logs()
        );
    }

    // And the broker carried grouped records: at most one per push and partition (12 partitions
    // per topic by default) instead of one per key.
    let east = clients
        .iter()
        .filter(|(_, edge, _)| edge.starts_with("east"))
        .count();
    for (region, keys) in [("east", east), ("west", KEYS - east)] {
        let (records, pushes) = records_on_the_broker(&cluster, region, keys * PUSHES).await;
        println!("{region}: {records} Kafka records carried {pushes} pushes");
        assert_eq!(pushes, keys * PUSHES, "{region}: pushes on the broker");
        assert!(
            records <= 12 * PUSHES && records < pushes,
            "{region}: {records} Kafka records for {pushes} pushes"
        );
    }
}
