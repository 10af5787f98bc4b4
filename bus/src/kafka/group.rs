//! One Kafka record for the records of one push that share a partition.
//!
//! A push to many keys or users becomes one [`OutgoingPush`] per key (or per user and region), so
//! that each keeps what is its own: its record index (edges and clients drop duplicates by
//! message id and record), its stream position (durable pushes are numbered per user) and whom
//! its receipts name. Sent one Kafka record each, a 100-key push costs 100 records, 100 copies of
//! its body and 100 delivery reports. So the producer sends the records of one push that go to
//! the same topic and partition as **one** Kafka record, a [`PushGroup`]: the fields the records
//! share (message id, operation, body, acceptance time) once, then each record's own fields and
//! partition key. The consumer hands the group out again as the records it holds, in order, all at
//! the group's log position (committed once every one of them is done), so the job, the edges and
//! the clients see exactly the pushes they would have seen ungrouped.
//!
//! A group is marked by the record header [`GROUP_HEADER`]; records without it are one
//! [`PushMessage`] each, as before (and as the in-process bus and other producers write them).
//! Consumers must understand groups before producers write them: upgrade job workers first.
//!
//! **Order.** Only consecutive records of one push (same message id, operation, body and time) are
//! grouped, and a group takes the place of its first record. Every record of one partition key is
//! in the same partition, hence in the same group of its push, in its original order; records of
//! other pushes are never passed. So each key's records keep their order in their partition.
//! A group holds at most about [`MAX_GROUP_BYTES`] of encoded records (a larger push is split
//! into several groups, in order), far below the broker's record size limit.

use crate::{IncomingPush, LogPosition, OutgoingPush};
use bytes::Bytes;
use prost::Message;
use rim_proto::schema::PushMessage;

/// Header naming a record whose value is a [`PushGroup`] (version 1 of the format).
pub(crate) const GROUP_HEADER: &str = "rim-push-group";
/// The value of [`GROUP_HEADER`] this version writes and reads.
pub(crate) const GROUP_VERSION: &[u8] = b"1";

/// Most encoded bytes of records one group takes before it is closed (librdkafka's and Kafka's
/// default record size limit is about 1 MB).
pub(crate) const MAX_GROUP_BYTES: usize = 256 * 1024;

/// The value of a grouped record.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PushGroup {
    /// What the records share: message id, operation, body and acceptance time (nothing else).
    #[prost(message, optional, tag = "1")]
    pub(crate) shared: Option<PushMessage>,
    /// The records, in order.
    #[prost(message, repeated, tag = "2")]
    pub(crate) members: Vec<GroupMember>,
}

/// One record of a group: its partition key and its own fields.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GroupMember {
    /// The ordering key the record was published with.
    #[prost(string, tag = "1")]
    pub(crate) partition_key: String,
    /// The record's own fields: record index, position, receipt target and target (the shared
    /// ones are left empty).
    #[prost(message, optional, tag = "2")]
    pub(crate) push: Option<PushMessage>,
}

/// One Kafka record to produce.
#[derive(Debug, PartialEq)]
pub(crate) struct Record {
    pub(crate) topic: String,
    /// The record's key: the partition key of its (first) push.
    pub(crate) key: String,
    /// The partition chosen by rim (see `partition`); `None` leaves it to librdkafka.
    pub(crate) partition: Option<i32>,
    pub(crate) payload: Vec<u8>,
    /// Whether the payload is a [`PushGroup`] (then it carries [`GROUP_HEADER`]).
    pub(crate) grouped: bool,
}

/// The Kafka records of `pushes`, in order, grouping the records of each push by partition.
/// `place` names the topic of a region and the partition of a partition key in it (`None`: not
/// known, the record goes alone and librdkafka picks its partition).
pub(crate) fn records(
    pushes: &[OutgoingPush],
    mut place: impl FnMut(&str, &str) -> (String, Option<i32>),
) -> Vec<Record> {
    let mut records = Vec::with_capacity(pushes.len());
    let mut start = 0;
    while start < pushes.len() {
        let first = &pushes[start].message;
        let end = start
            + pushes[start..]
                .iter()
                .take_while(|push| same_push(&push.message, first))
                .count();
        group_run(&pushes[start..end], &mut place, &mut records);
        start = end;
    }
    records
}

/// Whether two records belong to one push: the fields a group shares are equal.
fn same_push(a: &PushMessage, b: &PushMessage) -> bool {
    a.message_id == b.message_id
        && a.operation == b.operation
        && a.accepted_at_unix_ms == b.accepted_at_unix_ms
        && a.body == b.body
}

/// Groups one push's records (`run`) by topic and partition, in order of each group's first
/// record.
fn group_run(
    run: &[OutgoingPush],
    place: &mut impl FnMut(&str, &str) -> (String, Option<i32>),
    records: &mut Vec<Record>,
) {
    // Buckets in order of their first record; a record whose partition is unknown goes alone.
    // A push has at most one bucket per region and partition: a scan beats hashing topic names.
    let mut buckets: Vec<(String, Option<i32>, Vec<&OutgoingPush>)> = Vec::new();
    for push in run {
        let (topic, partition) = place(&push.region, &push.partition_key);
        let bucket = partition.and_then(|partition| {
            buckets
                .iter_mut()
                .find(|(known, at, _)| *at == Some(partition) && *known == topic)
        });
        match bucket {
            Some((_, _, members)) => members.push(push),
            None => buckets.push((topic, partition, vec![push])),
        }
    }
    for (topic, partition, members) in buckets {
        let mut from = 0;
        while from < members.len() {
            let mut size = 0;
            let mut to = from;
            while to < members.len() && (to == from || size < MAX_GROUP_BYTES) {
                size += members[to].message.encoded_len() + members[to].partition_key.len();
                to += 1;
            }
            records.push(record(&topic, partition, &members[from..to]));
            from = to;
        }
    }
}

/// One Kafka record for `members` (at least one): a plain [`PushMessage`] for one, a group for
/// more.
fn record(topic: &str, partition: Option<i32>, members: &[&OutgoingPush]) -> Record {
    let first = members[0];
    let payload = match members {
        [only] => only.message.encode_to_vec(),
        _ => PushGroup {
            shared: Some(PushMessage {
                message_id: first.message.message_id.clone(),
                operation: first.message.operation,
                body: first.message.body.clone(),
                accepted_at_unix_ms: first.message.accepted_at_unix_ms,
                ..PushMessage::default()
            }),
            members: members
                .iter()
                .map(|push| GroupMember {
                    partition_key: push.partition_key.clone(),
                    push: Some(PushMessage {
                        record: push.message.record,
                        position: push.message.position,
                        receipt_target: push.message.receipt_target.clone(),
                        target: push.message.target.clone(),
                        ..PushMessage::default()
                    }),
                })
                .collect(),
        }
        .encode_to_vec(),
    };
    Record {
        topic: topic.to_owned(),
        key: first.partition_key.clone(),
        partition,
        payload,
        grouped: members.len() > 1,
    }
}

/// The pushes of a grouped record's `payload` at `position`, in order; `Err` says why it is
/// corrupt.
pub(crate) fn expand(payload: Bytes, position: LogPosition) -> Result<Vec<IncomingPush>, String> {
    let group = PushGroup::decode(payload).map_err(|err| format!("not a push group: {err}"))?;
    let shared = group.shared.ok_or("push group without shared fields")?;
    if shared.message_id.is_empty() || group.members.is_empty() {
        return Err("push group without message id or records".into());
    }
    group
        .members
        .into_iter()
        .map(|member| {
            let own = member.push.ok_or("push group member without fields")?;
            if own.target.is_none() {
                return Err("push group member without target".to_owned());
            }
            Ok(IncomingPush {
                partition_key: member.partition_key,
                position,
                message: PushMessage {
                    message_id: shared.message_id.clone(),
                    operation: shared.operation,
                    body: shared.body.clone(),
                    accepted_at_unix_ms: shared.accepted_at_unix_ms,
                    ..own
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rim_proto::schema::push_message::Target;
    use rim_proto::schema::{KeyOnNode, KeysTarget, StreamPosition};

    /// Record `record` of push `id` to `key`, keyed by `partition_key`.
    fn push(id: &str, record: u32, partition_key: &str, key: &str) -> OutgoingPush {
        OutgoingPush {
            region: "sh".into(),
            partition_key: partition_key.into(),
            message: PushMessage {
                message_id: id.into(),
                operation: 1000,
                body: Bytes::from(format!("body of {id}")),
                accepted_at_unix_ms: 7,
                record,
                position: Some(StreamPosition {
                    stream: 1,
                    epoch: 2,
                    seq: u64::from(record) + 10,
                }),
                receipt_target: format!("key:{key}"),
                target: Some(Target::Keys(KeysTarget {
                    keys: vec![KeyOnNode {
                        key: key.into(),
                        node_id: "edge-1".into(),
                    }],
                })),
            },
        }
    }

    /// Places partition key `k<n>` in partition n % 3 of `rim-push-<region>`; other keys in none.
    fn place(region: &str, key: &str) -> (String, Option<i32>) {
        let n = key.strip_prefix('k').and_then(|n| n.parse::<i32>().ok());
        (format!("rim-push-{region}"), n.map(|n| n % 3))
    }

    /// Every push of `records`, as a consumer hands them out.
    fn expanded(records: &[Record]) -> Vec<OutgoingPush> {
        records
            .iter()
            .flat_map(|record| {
                let position = LogPosition {
                    partition: record.partition.unwrap_or(-1),
                    offset: 0,
                };
                let pushes = if record.grouped {
                    expand(Bytes::from(record.payload.clone()), position).unwrap()
                } else {
                    vec![IncomingPush {
                        partition_key: record.key.clone(),
                        position,
                        message: PushMessage::decode(record.payload.as_slice()).unwrap(),
                    }]
                };
                pushes.into_iter().map(|push| OutgoingPush {
                    region: "sh".into(),
                    partition_key: push.partition_key,
                    message: push.message,
                })
            })
            .collect()
    }

    #[test]
    fn one_pushs_records_become_one_record_per_partition_and_expand_unchanged() {
        let pushes: Vec<OutgoingPush> = (0..9)
            .map(|n| push("a", n, &format!("k{n}"), &format!("key-{n}")))
            .collect();
        let records = records(&pushes, place);
        let layout: Vec<(Option<i32>, bool, &str)> = records
            .iter()
            .map(|r| (r.partition, r.grouped, r.key.as_str()))
            .collect();
        assert_eq!(
            layout,
            [
                (Some(0), true, "k0"),
                (Some(1), true, "k1"),
                (Some(2), true, "k2")
            ]
        );
        let by_partition = |p: u32| {
            pushes
                .iter()
                .filter(move |push| push.message.record % 3 == p)
        };
        let expected: Vec<OutgoingPush> = (0..3).flat_map(by_partition).cloned().collect();
        assert_eq!(expanded(&records), expected);
    }

    #[test]
    fn records_of_different_pushes_or_unknown_partitions_are_never_merged_or_passed() {
        let pushes = vec![
            push("a", 0, "k0", "x"),
            push("b", 0, "k0", "x"),
            push("b", 1, "k3", "y"),
            push("b", 2, "unplaced", "z"),
            push("c", 0, "k0", "x"),
            push("b", 3, "k0", "w"),
        ];
        let records = records(&pushes, place);
        let layout: Vec<(bool, &str)> = records
            .iter()
            .map(|r| (r.grouped, r.key.as_str()))
            .collect();
        assert_eq!(
            layout,
            [
                (false, "k0"),
                (true, "k0"),
                (false, "unplaced"),
                (false, "k0"),
                (false, "k0")
            ]
        );
        assert_eq!(expanded(&records), pushes);
    }

    #[test]
    fn a_large_push_is_split_into_groups_in_order() {
        let body = Bytes::from(vec![b'x'; MAX_GROUP_BYTES / 3]);
        let pushes: Vec<OutgoingPush> = (0..10)
            .map(|n| {
                let mut push = push("a", n, "k0", &format!("key-{n}"));
                push.message.body = body.clone();
                push
            })
            .collect();
        let records = records(&pushes, place);
        assert!(records.len() > 1, "{} records", records.len());
        assert!(
            records
                .iter()
                .all(|r| r.payload.len() < 2 * MAX_GROUP_BYTES)
        );
        assert_eq!(expanded(&records), pushes);
    }

    #[test]
    fn a_damaged_group_is_refused() {
        let position = LogPosition {
            partition: 0,
            offset: 0,
        };
        assert!(expand(Bytes::from_static(b"\xff\xff"), position).is_err());
        let empty = PushGroup {
            shared: Some(PushMessage {
                message_id: "a".into(),
                ..PushMessage::default()
            }),
            members: Vec::new(),
        };
        assert!(expand(Bytes::from(empty.encode_to_vec()), position).is_err());
        let targetless = PushGroup {
            members: vec![GroupMember {
                partition_key: "k".into(),
                push: Some(PushMessage::default()),
            }],
            ..empty
        };
        assert!(expand(Bytes::from(targetless.encode_to_vec()), position).is_err());
    }
}
