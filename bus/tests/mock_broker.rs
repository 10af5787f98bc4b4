//! A broker that refuses CreateTopics: rim's clients use a topic the broker already has.
//!
//! librdkafka's mock cluster (a real Kafka-protocol broker over TCP, in this process) has no
//! CreateTopics, like a cluster whose operator denies rim that right and creates the topics
//! itself. Producer and consumer must carry pushes through the topic it lists (without the
//! metadata fallback of rim-bus's topic creator, the first publish fails).

use rdkafka::mocking::MockCluster;
use rim_bus::kafka::{KafkaConsumer, KafkaProducer, KafkaSettings};
use rim_bus::{BusConsumer, BusProducer, OutgoingPush};
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{PushMessage, RoomTarget};
use std::time::Duration;

fn push(region: &str, id: &str) -> OutgoingPush {
    OutgoingPush {
        region: region.into(),
        partition_key: format!("room:{id}"),
        message: PushMessage {
            message_id: id.into(),
            operation: 1000,
            target: Some(Target::Room(RoomTarget { room: id.into() })),
            ..PushMessage::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_flow_through_a_topic_the_broker_has_although_it_cannot_create_topics() {
    let mock = MockCluster::new(1).unwrap();
    let mut settings = KafkaSettings::new(mock.bootstrap_servers());
    settings.partitions = 3;
    settings.delivery_timeout = Duration::from_secs(5);
    mock.create_topic(&settings.topic("sh"), 3, 1).unwrap();

    let producer = KafkaProducer::new(&settings).unwrap();
    producer
        .publish(vec![push("sh", "a"), push("sh", "b")])
        .await
        .unwrap();
    let mut consumer = KafkaConsumer::new(&settings, "sh", "job-sh").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.next_batch(10))
            .await
            .expect("the consumer reads the pushes within 30 s")
            .unwrap();
        consumer.commit(&batch).await.unwrap();
        seen.extend(batch.into_iter().map(|push| push.message.message_id));
    }
    seen.sort();
    assert_eq!(seen, ["a", "b"]);
}
