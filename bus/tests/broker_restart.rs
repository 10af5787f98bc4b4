//! A broker restart needs no restart of rim: against a real tansu broker that is killed and started
//! again on the same port with empty (memory) storage — every topic, group and offset lost — the
//! producer publishes again, the consumer rejoins and gets the new pushes, and both health probes
//! say "unhealthy" while the broker is down and "healthy" once it is back.

use rim_bus::kafka::{KafkaConsumer, KafkaProducer, KafkaSettings};
use rim_bus::{BusConsumer, BusHealth, BusProducer, HealthProbe, OutgoingPush};
use rim_proto::schema::PushMessage;
use rim_proto::schema::RoomTarget;
use rim_proto::schema::push_message::Target;
use rim_testkit::kafka::TestKafka;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const REGION: &str = "sh";
/// How long recovery may take on a loaded machine (reconnect backoff, metadata refresh, rejoin).
const RECOVERY: Duration = Duration::from_secs(60);

fn push(id: &str) -> OutgoingPush {
    OutgoingPush {
        region: REGION.into(),
        // One key for all: the push after the restart lands in the partition the consumer had
        // read before, where its old position must not hide the recreated partition's records.
        partition_key: "room:live://1".into(),
        message: PushMessage {
            message_id: id.into(),
            operation: 1000,
            accepted_at_unix_ms: 1,
            target: Some(Target::Room(RoomTarget {
                room: "live://1".into(),
            })),
            ..PushMessage::default()
        },
    }
}

/// Waits until `probe` answers `healthy` (or not), returning how long that took.
async fn health_becomes(probe: &dyn HealthProbe, healthy: bool) -> Duration {
    let started = Instant::now();
    loop {
        let health = probe.check().await;
        if health.is_healthy() == healthy {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < RECOVERY,
            "health still {health:?} after {RECOVERY:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The producer as a probe, so both sides are checked the same way.
struct ProducerHealth(Arc<KafkaProducer>);

#[async_trait::async_trait]
impl HealthProbe for ProducerHealth {
    async fn check(&self) -> BusHealth {
        self.0.health().await
    }
}

/// Reads until a push with `id` arrives, returning how long that took.
async fn receive(consumer: &mut KafkaConsumer, id: &str) -> Duration {
    let started = Instant::now();
    loop {
        let remaining = RECOVERY.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, consumer.next_batch(100)).await {
            Err(_) => panic!("{id} did not arrive within {RECOVERY:?}"),
            // Expected while the broker is down or the topic is being recreated.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Ok(batch)) => {
                consumer.commit(&batch).await.ok();
                if batch.iter().any(|push| push.message.message_id == id) {
                    return started.elapsed();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_recover_from_a_broker_that_lost_everything() {
    let mut broker = TestKafka::start();
    let mut settings = KafkaSettings::new(broker.bootstrap());
    settings.partitions = 2;
    let producer = Arc::new(KafkaProducer::new(&settings).unwrap());
    let mut consumer = KafkaConsumer::join(&settings, REGION, "rim-job-sh", Some("job-a-sh"))
        .await
        .unwrap();
    let consumer_health = consumer.health_probe();
    let producer_health = ProducerHealth(producer.clone());

    producer.publish(vec![push("before")]).await.unwrap();
    receive(&mut consumer, "before").await;
    health_becomes(&producer_health, true).await;
    health_becomes(consumer_health.as_ref(), true).await;

    broker.stop();
    let noticed = health_becomes(&producer_health, false).await;
    health_becomes(consumer_health.as_ref(), false).await;
    assert!(
        producer.publish(vec![push("during")]).await.is_err(),
        "nothing can be published while the broker is down"
    );
    eprintln!("producer health turned unhealthy after {noticed:?}");

    broker.start_again();
    let restarted = Instant::now();
    loop {
        match producer.publish(vec![push("after")]).await {
            Ok(()) => break,
            Err(err) => {
                assert!(
                    restarted.elapsed() < RECOVERY,
                    "publishing still fails {RECOVERY:?} after the restart: {err}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let published_after = restarted.elapsed();
    let received_after = receive(&mut consumer, "after").await;
    health_becomes(&producer_health, true).await;
    health_becomes(consumer_health.as_ref(), true).await;
    eprintln!(
        "after the restart: published after {published_after:?}, received {received_after:?} later, healthy after {:?}",
        restarted.elapsed()
    );
}
