//! Turning a batch of bus records into one request per edge.
//!
//! - A key push carries its keys already resolved to nodes: keys are grouped by node, and each
//!   edge gets one [`EdgePush`] with only its own keys.
//! - A superseded-session record goes to the one node named in it (like a one-key key push), as an
//!   [`EdgePush`] that tells that edge to close the superseded connection.
//! - A room or broadcast push goes to every live edge of the region (each edge knows its own room
//!   members); a broadcast's `speed` is passed through, the edge applies the rate cap.
//!
//! Each edge's request lists its pushes in batch order, which is log order, so a target's pushes
//! reach its edge in the order they were accepted. Keys on a node that is not a live edge of the
//! region are dropped and counted: the node is dead or gone, and so are its sessions.

use crate::directory::EdgeTarget;
use rim_bus::IncomingPush;
use rim_proto::schema::edge_push::Target as EdgeTargetKind;
use rim_proto::schema::push_message::Target;
use rim_proto::schema::{EdgeKeys, EdgePush, EdgePushRequest, EdgeSuperseded, PushMessage};
use std::collections::HashMap;

/// What one batch asks of the region's edges.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Routing {
    /// One request per edge that has something to do, in the directory's edge order.
    pub(crate) requests: Vec<(EdgeTarget, EdgePushRequest)>,
    /// Key pushes (one per push and node) and superseded-session records addressed to nodes that
    /// are not live edges here.
    pub(crate) to_gone_edges: u64,
    /// Records without a target (not written by rim's control plane); skipped.
    pub(crate) without_target: u64,
}

/// Whether some key push in the batch names a node missing from `edges` (then the caller asks the
/// directory again before routing, in case the node just registered).
pub(crate) fn unknown_edges<'a>(batch: &'a [IncomingPush], edges: &[EdgeTarget]) -> Vec<&'a str> {
    let mut unknown: Vec<&str> = Vec::new();
    let mut note = |node_id: &'a str| {
        if !is_listed(node_id, edges) && !unknown.contains(&node_id) {
            unknown.push(node_id);
        }
    };
    for push in batch {
        match &push.message.target {
            Some(Target::Keys(keys)) => keys.keys.iter().for_each(|key| note(&key.node_id)),
            Some(Target::Superseded(session)) => note(&session.node_id),
            Some(Target::Room(_) | Target::Broadcast(_)) | None => {}
        }
    }
    unknown
}

/// Whether `node_id` is one of `edges`.
fn is_listed(node_id: &str, edges: &[EdgeTarget]) -> bool {
    edges.iter().any(|edge| edge.node_id == node_id)
}

/// Splits a batch into per-edge requests. The records give their ids, receipt targets, keys and
/// rooms to the edge pushes made of them (each field is moved into the last edge push of its
/// record and copied only into the others), so the batch keeps only what a commit and the lag
/// metrics read: positions and acceptance times.
pub(crate) fn route(batch: &mut [IncomingPush], edges: &[EdgeTarget]) -> Routing {
    let index: HashMap<&str, usize> = edges
        .iter()
        .enumerate()
        .map(|(position, edge)| (edge.node_id.as_str(), position))
        .collect();
    let mut per_edge: Vec<Vec<EdgePush>> = vec![Vec::new(); edges.len()];
    let mut routing = Routing::default();
    for push in batch {
        let message = &mut push.message;
        let mut fanout = Fanout::default();
        match message.target.take() {
            Some(Target::Keys(target)) => {
                // Group keys by node, keeping the nodes in first-seen order; keys that all sit on
                // one node (the usual case) need no list of groups.
                let mut keys = target.keys.into_iter();
                let Some(first) = keys.next() else { continue };
                let (first_node, mut first_keys) = (first.node_id, vec![first.key]);
                let mut others: Vec<(String, Vec<String>)> = Vec::new();
                for key in keys {
                    if key.node_id == first_node {
                        first_keys.push(key.key);
                        continue;
                    }
                    match others.iter_mut().find(|(node, _)| *node == key.node_id) {
                        Some((_, keys)) => keys.push(key.key),
                        None => others.push((key.node_id, vec![key.key])),
                    }
                }
                for (node, keys) in std::iter::once((first_node, first_keys)).chain(others) {
                    match index.get(node.as_str()) {
                        Some(&position) => fanout.add(
                            &mut per_edge,
                            message,
                            position,
                            EdgeTargetKind::Keys(EdgeKeys { keys }),
                        ),
                        None => routing.to_gone_edges += 1,
                    }
                }
            }
            Some(Target::Superseded(session)) => match index.get(session.node_id.as_str()) {
                Some(&position) => fanout.add(
                    &mut per_edge,
                    message,
                    position,
                    EdgeTargetKind::Superseded(EdgeSuperseded {
                        key: session.key,
                        connection_id: session.connection_id,
                    }),
                ),
                None => routing.to_gone_edges += 1,
            },
            Some(Target::Room(mut room)) => {
                for position in 0..per_edge.len() {
                    let room = if position + 1 == per_edge.len() {
                        std::mem::take(&mut room.room)
                    } else {
                        room.room.clone()
                    };
                    fanout.add(&mut per_edge, message, position, EdgeTargetKind::Room(room));
                }
            }
            Some(Target::Broadcast(broadcast)) => {
                for position in 0..per_edge.len() {
                    let target = EdgeTargetKind::Broadcast(broadcast);
                    fanout.add(&mut per_edge, message, position, target);
                }
            }
            None => routing.without_target += 1,
        }
        fanout.finish(&mut per_edge, message);
    }
    routing.requests = edges
        .iter()
        .cloned()
        .zip(per_edge)
        .filter(|(_, pushes)| !pushes.is_empty())
        .map(|(edge, pushes)| (edge, EdgePushRequest { pushes }))
        .collect();
    routing
}

/// The edge pushes of one record, handed out one step late: when the next one comes (or the
/// record ends), the one held is queued, so only the last takes the record's id and receipt target
/// and the others copy them.
#[derive(Default)]
struct Fanout {
    /// The edge (its index) and target of the edge push not queued yet.
    held: Option<(usize, EdgeTargetKind)>,
}

impl Fanout {
    /// Adds an edge push of `message` for the edge at `position`.
    fn add(
        &mut self,
        per_edge: &mut [Vec<EdgePush>],
        message: &PushMessage,
        position: usize,
        target: EdgeTargetKind,
    ) {
        if let Some((earlier, target)) = self.held.replace((position, target)) {
            per_edge[earlier].push(edge_push(
                message.message_id.clone(),
                message.receipt_target.clone(),
                message,
                target,
            ));
        }
    }

    /// Queues the last edge push of `message`, which takes its id and receipt target.
    fn finish(self, per_edge: &mut [Vec<EdgePush>], message: &mut PushMessage) {
        if let Some((position, target)) = self.held {
            let message_id = std::mem::take(&mut message.message_id);
            let receipt_target = std::mem::take(&mut message.receipt_target);
            per_edge[position].push(edge_push(message_id, receipt_target, message, target));
        }
    }
}

/// The edge's view of one push; it keeps the record index, so (message_id, record) still names
/// one delivery at the edge, and the durable position and receipt target, so rim-aware
/// connections get the push with its place in its stream.
fn edge_push(
    message_id: String,
    receipt_target: String,
    message: &PushMessage,
    target: EdgeTargetKind,
) -> EdgePush {
    EdgePush {
        message_id,
        record: message.record,
        operation: message.operation,
        body: message.body.clone(),
        position: message.position,
        receipt_target,
        target: Some(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rim_bus::LogPosition;
    use rim_proto::schema::{
        BroadcastTarget, KeyOnNode, KeysTarget, RoomTarget, SupersededSession,
    };

    fn edge(id: &str) -> EdgeTarget {
        EdgeTarget {
            node_id: id.into(),
            push_url: format!("http://{id}"),
            draining: false,
        }
    }

    fn incoming(offset: i64, id: &str, target: Target) -> IncomingPush {
        IncomingPush {
            partition_key: "k".into(),
            position: LogPosition {
                partition: 0,
                offset,
            },
            message: PushMessage {
                message_id: id.into(),
                operation: 1000,
                body: id.as_bytes().to_vec().into(),
                accepted_at_unix_ms: 0,
                record: offset as u32,
                target: Some(target),
                ..PushMessage::default()
            },
        }
    }

    fn keys(pairs: &[(&str, &str)]) -> Target {
        Target::Keys(KeysTarget {
            keys: pairs
                .iter()
                .map(|(key, node)| KeyOnNode {
                    key: (*key).into(),
                    node_id: (*node).into(),
                })
                .collect(),
        })
    }

    /// A push as an edge sees it: id and target.
    type Seen = (String, Option<EdgeTargetKind>);

    fn summary(routing: &Routing) -> Vec<(String, Vec<Seen>)> {
        routing
            .requests
            .iter()
            .map(|(edge, request)| {
                let pushes = request
                    .pushes
                    .iter()
                    .map(|push| (push.message_id.clone(), push.target.clone()))
                    .collect();
                (edge.node_id.clone(), pushes)
            })
            .collect()
    }

    fn only_keys(list: &[&str]) -> Option<EdgeTargetKind> {
        Some(EdgeTargetKind::Keys(EdgeKeys {
            keys: list.iter().map(|key| (*key).into()).collect(),
        }))
    }

    #[test]
    fn the_stream_position_and_receipt_target_reach_every_edge_push() {
        let edges = [edge("n1"), edge("n2")];
        let mut stored = incoming(0, "m0", keys(&[("a", "n1"), ("b", "n2")]));
        let position = rim_proto::schema::StreamPosition {
            stream: 1,
            epoch: 3,
            seq: 41,
        };
        stored.message.position = Some(position);
        stored.message.receipt_target = "mid:7".into();
        let routing = route(&mut [stored], &edges);
        let pushes: Vec<&EdgePush> = routing
            .requests
            .iter()
            .flat_map(|(_, request)| &request.pushes)
            .collect();
        assert_eq!(pushes.len(), 2);
        for push in pushes {
            assert_eq!(push.position, Some(position));
            assert_eq!(push.receipt_target, "mid:7");
        }
    }

    #[test]
    fn keys_go_to_their_nodes_and_rooms_to_every_edge_in_batch_order() {
        let edges = [edge("n1"), edge("n2"), edge("idle")];
        let mut batch = [
            incoming(0, "m0", keys(&[("a", "n1"), ("b", "n2"), ("c", "n1")])),
            incoming(
                1,
                "m1",
                Target::Room(RoomTarget {
                    room: "live://1".into(),
                }),
            ),
            incoming(2, "m2", keys(&[("d", "n2")])),
            incoming(3, "m3", Target::Broadcast(BroadcastTarget { speed: 7 })),
        ];
        let routing = route(&mut batch, &edges);
        let room = Some(EdgeTargetKind::Room("live://1".into()));
        let broadcast = Some(EdgeTargetKind::Broadcast(BroadcastTarget { speed: 7 }));
        assert_eq!(
            summary(&routing),
            vec![
                (
                    "n1".into(),
                    vec![
                        ("m0".into(), only_keys(&["a", "c"])),
                        ("m1".into(), room.clone()),
                        ("m3".into(), broadcast.clone()),
                    ]
                ),
                (
                    "n2".into(),
                    vec![
                        ("m0".into(), only_keys(&["b"])),
                        ("m1".into(), room.clone()),
                        ("m2".into(), only_keys(&["d"])),
                        ("m3".into(), broadcast.clone()),
                    ]
                ),
                (
                    "idle".into(),
                    vec![("m1".into(), room), ("m3".into(), broadcast)]
                ),
            ]
        );
        assert_eq!(routing.requests[0].1.pushes[0].body, &b"m0"[..]);
        assert_eq!(routing.to_gone_edges, 0);
    }

    #[test]
    fn keys_on_unknown_nodes_are_counted_not_sent() {
        let edges = [edge("n1")];
        let mut batch = [incoming(
            0,
            "m0",
            keys(&[("a", "gone"), ("b", "n1"), ("c", "gone")]),
        )];
        assert_eq!(unknown_edges(&batch, &edges).len(), 1);
        assert!(unknown_edges(&batch[..0], &edges).is_empty());
        let routing = route(&mut batch, &edges);
        assert_eq!(
            summary(&routing),
            vec![("n1".into(), vec![("m0".into(), only_keys(&["b"]))])]
        );
        assert_eq!(routing.to_gone_edges, 1);
    }

    #[test]
    fn records_keep_their_index_and_a_superseded_session_goes_to_its_node_only() {
        let edges = [edge("n1"), edge("n2")];
        let superseded = |node: &str| {
            Target::Superseded(SupersededSession {
                key: "a".into(),
                node_id: node.into(),
                connection_id: 9,
            })
        };
        let mut batch = [
            incoming(3, "m0", keys(&[("a", "n1")])),
            incoming(4, "m0", keys(&[("b", "n2")])),
            incoming(5, "s", superseded("n2")),
            incoming(6, "s", superseded("gone")),
        ];
        assert!(!unknown_edges(&batch[3..], &edges).is_empty());
        assert!(unknown_edges(&batch[..3], &edges).is_empty());
        let routing = route(&mut batch, &edges);
        let records: Vec<(String, Vec<(String, u32)>)> = routing
            .requests
            .iter()
            .map(|(edge, request)| {
                let pushes = request
                    .pushes
                    .iter()
                    .map(|push| (push.message_id.clone(), push.record))
                    .collect();
                (edge.node_id.clone(), pushes)
            })
            .collect();
        assert_eq!(
            records,
            vec![
                ("n1".into(), vec![("m0".into(), 3)]),
                ("n2".into(), vec![("m0".into(), 4), ("s".into(), 5)]),
            ]
        );
        assert_eq!(
            routing.requests[1].1.pushes[1].target,
            Some(EdgeTargetKind::Superseded(EdgeSuperseded {
                key: "a".into(),
                connection_id: 9
            }))
        );
        assert_eq!(routing.to_gone_edges, 1);
    }

    #[test]
    fn a_region_without_edges_gets_no_requests() {
        let mut batch = [incoming(
            0,
            "m0",
            Target::Room(RoomTarget {
                room: "live://1".into(),
            }),
        )];
        assert_eq!(route(&mut batch, &[]), Routing::default());
    }
}
