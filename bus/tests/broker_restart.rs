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
#[ignore = "librdkafka 2.12 (bundled) SIGSEGVs in this process in some runs when tansu comes back empty \
            (NULL topic name after a Fetch names an unknown topic id); the same recovery is covered end to \
            end by tests/chaos.rs broker_restarted and rim-job's broker restart test. Run with \
            `cargo nextest run -p rim-bus --test broker_restart --run-ignored all`"]
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

/// While the broker is away librdkafka queues an error for every failed connection attempt of each
/// of the consumer's connections, behind which the records fetched afterwards wait. A job worker
/// does not read during an outage: it pauses after each failed read, up to `job_retry_max_ms` (5 s
/// by default). If every read returned only the oldest queued error, the worker would pause once
/// per stale error after the broker was back — minutes after a 10 s outage (the chaos test's
/// `broker_restarted` saw no delivery within 60 s). One failed read must account for the whole
/// backlog, so records flow after at most a couple of errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "librdkafka 2.12 (bundled) SIGSEGVs in this process in some runs when tansu comes back empty \
            (NULL topic name after a Fetch names an unknown topic id); the same recovery is covered end to \
            end by tests/chaos.rs broker_restarted and rim-job's broker restart test. Run with \
            `cargo nextest run -p rim-bus --test broker_restart --run-ignored all`"]
async fn errors_queued_during_an_outage_cost_one_failed_read() {
    let mut broker = TestKafka::start();
    let mut settings = KafkaSettings::new(broker.bootstrap());
    settings.partitions = 2;
    let producer = KafkaProducer::new(&settings).unwrap();
    let mut consumer = KafkaConsumer::join(&settings, REGION, "rim-job-sh", Some("job-a-sh"))
        .await
        .unwrap();
    producer.publish(vec![push("before")]).await.unwrap();
    receive(&mut consumer, "before").await;

    // Down for 10 s without reading, as a worker pausing between failed reads does.
    broker.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.start_again();
    let restarted = Instant::now();
    while let Err(err) = producer.publish(vec![push("after")]).await {
        assert!(
            restarted.elapsed() < RECOVERY,
            "publishing still fails {RECOVERY:?} after the restart: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut failed_reads = 0;
    loop {
        let remaining = RECOVERY.saturating_sub(restarted.elapsed());
        match tokio::time::timeout(remaining, consumer.next_batch(100)).await {
            Err(_) => panic!("\"after\" did not arrive within {RECOVERY:?}"),
            Ok(Err(err)) => {
                failed_reads += 1;
                eprintln!("failed read {failed_reads}: {err}");
            }
            Ok(Ok(batch)) => {
                if batch.iter().any(|push| push.message.message_id == "after") {
                    break;
                }
            }
        }
    }
    eprintln!(
        "\"after\" received {:?} after the restart, after {failed_reads} failed reads",
        restarted.elapsed()
    );
    assert!(
        failed_reads <= 3,
        "{failed_reads} failed reads after the broker was back: each one costs the worker a pause"
    );
}

/// Business clients give up after a timeout, often the delivery timeout (the chaos suite's pusher:
/// 5 s). After a broker restart without its state the producer is stuck (records time out under a
/// producer id the broker forgot) and must be replaced by the publish that sees its records time
/// out; if a caller giving up cancelled that publish, nothing would ever be published again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_recovers_although_every_caller_gives_up_at_the_delivery_timeout() {
    let mut broker = TestKafka::start();
    let settings = KafkaSettings::new(broker.bootstrap());
    let producer = KafkaProducer::new(&settings).unwrap();
    producer.publish(vec![push("before")]).await.unwrap();

    broker.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.start_again();
    let restarted = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let publish = producer.publish(vec![push("after")]);
        if let Ok(Ok(())) = tokio::time::timeout(settings.delivery_timeout, publish).await {
            break;
        }
        assert!(
            restarted.elapsed() < RECOVERY,
            "no publish got through within {RECOVERY:?} of the restart ({attempts} attempts)"
        );
    }
    eprintln!(
        "published again {:?} after the restart ({attempts} attempts)",
        restarted.elapsed()
    );
}
