//! The records of one push that share a partition travel as one Kafka record, against a real
//! Kafka-protocol broker (tansu): a push to many keys costs one record per partition, each key's
//! records stay in the one partition librdkafka's partitioner gives it, in order, and the consumer
//! hands out every record of the push with its own fields, committed only once all are done.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rim_bus::kafka::{KafkaConsumer, KafkaProducer, KafkaSettings};
use rim_bus::{BusConsumer, BusProducer, IncomingPush, OutgoingPush};
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{KeyOnNode, KeysTarget, PushMessage, StreamPosition};
use rim_testkit::kafka::TestKafka;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a test waits for records it expects (a Kafka group join takes a few seconds).
const WAIT: Duration = Duration::from_secs(30);
/// Keys each push goes to.
const KEYS: u32 = 60;
/// Partitions of the topic, created before rim sees it (rim's own setting says 2: the broker's
/// count must win).
const PARTITIONS: i32 = 5;

/// Record `n` of push `id`: to key `k<n>`, with its own position and receipt target, as control
/// writes a key push to stored sessions.
fn record(id: &str, n: u32) -> OutgoingPush {
    OutgoingPush {
        region: "sh".into(),
        partition_key: format!("key:k{n}"),
        message: PushMessage {
            message_id: id.into(),
            operation: 1000,
            body: format!("body of {id}").into_bytes().into(),
            accepted_at_unix_ms: 1,
            record: n,
            position: Some(StreamPosition {
                stream: 1,
                epoch: 9,
                seq: u64::from(n) + 100,
            }),
            receipt_target: format!("key:k{n}"),
            target: Some(Target::Keys(KeysTarget {
                keys: vec![KeyOnNode {
                    key: format!("k{n}"),
                    node_id: format!("edge-{}", n % 3),
                }],
            })),
        },
    }
}

fn push(id: &str) -> Vec<OutgoingPush> {
    (0..KEYS).map(|n| record(id, n)).collect()
}

/// Reads until `count` pushes arrived (failing after [`WAIT`]), without committing.
async fn take(consumer: &mut KafkaConsumer, count: usize) -> Vec<IncomingPush> {
    let mut taken = Vec::new();
    tokio::time::timeout(WAIT, async {
        while taken.len() < count {
            taken.extend(consumer.next_batch(count - taken.len()).await.unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} pushes arrived", taken.len()));
    taken
}

/// Records in each partition of `topic` (its high watermark: the topic is fresh).
fn records_per_partition(brokers: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|partition| {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_many_keys_is_one_record_per_partition_and_each_key_keeps_its_partition() {
    let broker = TestKafka::start();
    let settings = KafkaSettings {
        partitions: 2,
        ..KafkaSettings::new(broker.bootstrap())
    };
    let topic = settings.topic("sh");
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // Two pushes in one publish (as the durable writer batches them), then a third.
    let producer = KafkaProducer::new(&settings).unwrap();
    let mut first_two = push("a");
    first_two.extend(push("b"));
    producer.publish(first_two).await.unwrap();
    producer.publish(push("c")).await.unwrap();

    // Where librdkafka's own partitioner (rim configures none: the default) puts each key, in a
    // topic of the same partition count.
    let plain: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let mut librdkafka = BTreeMap::new();
    let probe = "rim-probe-5";
    admin
        .create_topics(
            &[NewTopic::new(probe, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for n in 0..KEYS {
        let key = format!("key:k{n}");
        let delivered = plain
            .send(
                FutureRecord::to(probe).key(&key).payload("probe"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        librdkafka.insert(key, delivered.partition);
    }
    let partitions_used: BTreeSet<i32> = librdkafka.values().copied().collect();

    // One record per push and partition.
    let per_partition = records_per_partition(&broker.bootstrap(), &topic);
    let expected: Vec<i64> = (0..PARTITIONS)
        .map(|p| if partitions_used.contains(&p) { 3 } else { 0 })
        .collect();
    assert_eq!(per_partition, expected, "records per partition");

    let mut consumer = KafkaConsumer::new(&settings, "sh", "job").await.unwrap();
    let received = take(&mut consumer, 3 * KEYS as usize).await;
    // Every record came back whole, with its own fields, once.
    let mut by_key: BTreeMap<String, Vec<&IncomingPush>> = BTreeMap::new();
    for push in &received {
        by_key
            .entry(push.partition_key.clone())
            .or_default()
            .push(push);
    }
    assert_eq!(by_key.len(), KEYS as usize);
    for (key, pushes) in &by_key {
        let n: u32 = key.trim_start_matches("key:k").parse().unwrap();
        let ids: Vec<&str> = pushes
            .iter()
            .map(|p| p.message.message_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c"], "{key}: its pushes in order");
        for push in pushes {
            let id = push.message.message_id.clone();
            assert_eq!(push.message, record(&id, n).message, "{key}");
        }
        let partitions: BTreeSet<i32> = pushes.iter().map(|p| p.position.partition).collect();
        assert_eq!(
            partitions,
            BTreeSet::from([librdkafka[key]]),
            "{key}: one partition, librdkafka's"
        );
        let offsets: Vec<i64> = pushes.iter().map(|p| p.position.offset).collect();
        assert!(offsets.is_sorted(), "{key}: offsets {offsets:?}");
    }
    // Each (partition, offset) holds the records of one push.
    let mut per_record: BTreeMap<(i32, i64), BTreeSet<&str>> = BTreeMap::new();
    for push in &received {
        per_record
            .entry((push.position.partition, push.position.offset))
            .or_default()
            .insert(&push.message.message_id);
    }
    assert_eq!(per_record.len(), 3 * partitions_used.len());
    assert!(per_record.values().all(|ids| ids.len() == 1));

    // A record is committed only once all its pushes are: committing all but one push of each
    // group leaves every group to be read again by the next consumer of the group.
    // A record is committed only once all its pushes are: holding back a few pushes of the first
    // push leaves their partitions to be read again, from that push's record, by the next
    // consumer of the group, and the other partitions not.
    let (held, done): (Vec<IncomingPush>, Vec<IncomingPush>) = received
        .iter()
        .cloned()
        .partition(|push| push.message.message_id == "a" && push.message.record < 3);
    let held_partitions: BTreeSet<i32> = held.iter().map(|p| p.position.partition).collect();
    let expected_again = received
        .iter()
        .filter(|push| held_partitions.contains(&push.position.partition))
        .count();
    consumer.commit(&done).await.unwrap();
    consumer.flush_commits().await.unwrap();
    drop(consumer);
    let mut next = KafkaConsumer::new(&settings, "sh", "job").await.unwrap();
    let again = take(&mut next, expected_again).await;
    let again_partitions: BTreeSet<i32> = again.iter().map(|p| p.position.partition).collect();
    assert_eq!(again_partitions, held_partitions);
    let nothing_more = tokio::time::timeout(Duration::from_secs(2), next.next_batch(1)).await;
    assert!(nothing_more.is_err(), "more came: {nothing_more:?}");
}
