//! Fan-out that batches by what is queued: a request's consecutive pushes to the same room leave as
//! one op-9 frame per connection, in order, over real sockets; merging never hides the slow-consumer
//! bounds.

mod common;

use std::time::Duration;

use common::{Kind, key_push, room_push, start};
use rim_proto::message::{self, Packets};
use rim_proto::{Packet, op};

both_transports!(
    room_pushes_of_one_request_arrive_as_one_batch,
    a_connection_behind_for_too_long_is_closed
);

/// Two (then three) room pushes in one request reach the client as one op-9 message holding both
/// packets in order (WebSocket), or as exactly those packets back to back (TCP, which receives a
/// batch's inner packets only). A duplicate in the run is skipped without splitting it.
async fn room_pushes_of_one_request_arrive_as_one_batch(kind: Kind) {
    let edge = start(|_| {}).await;
    let mut client = edge.client(kind, "member", "live://9", &[]).await;
    let _other = edge.client(Kind::Tcp, "other", "live://9", &[]).await;
    let runs: [&[(&str, i32, &str)]; 2] = [
        &[("m1", 1000, "first"), ("m2", 1001, "second")],
        &[("m3", 1000, "a"), ("m1", 1000, "dup"), ("m4", 1002, "bb")],
    ];
    for run in runs {
        let pushes = run
            .iter()
            .map(|(id, op_code, body)| room_push(id, *op_code, body.as_bytes(), "live://9"))
            .collect();
        let delivered = edge.push(pushes).await;
        let expected: Vec<u32> = run
            .iter()
            .map(|(id, ..)| if *id == "m1" && run.len() == 3 { 0 } else { 2 })
            .collect();
        assert_eq!(delivered, expected);
        let packets: Vec<Packet> = run
            .iter()
            .filter(|(_, _, body)| *body != "dup")
            .map(|(_, op_code, body)| Packet::new(1, *op_code, 0, body.as_bytes().to_vec()))
            .collect();
        if kind == Kind::Ws {
            let batch = message::decode(client.recv_message().await, usize::MAX).unwrap();
            assert_eq!((batch.op, batch.ver, batch.seq), (op::RAW, 1, 0));
            let inner: Vec<Packet> = Packets::new(batch.body, usize::MAX)
                .map(Result::unwrap)
                .collect();
            assert_eq!(inner, packets, "one message, every packet, in order");
        } else {
            let bytes: Vec<u8> = packets.iter().flat_map(|p| p.to_bytes()).collect();
            assert_eq!(client.recv_bytes(bytes.len()).await, bytes);
        }
        assert!(client.silent_for(50).await, "nothing else");
    }
}

/// A client that stops reading keeps its pushes queued; once the oldest has waited longer than
/// `edge_queue_max_age_ms` the next push is refused and the connection closed, while a bystander in
/// the same room keeps receiving (merged frames included).
async fn a_connection_behind_for_too_long_is_closed(kind: Kind) {
    let edge = start(|c| {
        c.edge_queue_max_bytes = 1 << 30;
        c.edge_queue_max_age_ms = 300;
        c.edge_max_push_body = 1 << 20;
    })
    .await;
    let mut bystander = edge.client(Kind::Ws, "bystander", "", &[1000]).await;
    let _victim = edge.client(kind, "victim", "", &[1000]).await;
    let body = vec![b'x'; 256 * 1024];
    let mut refused_after = None;
    for i in 0..400 {
        let push = key_push(&format!("slow-{i}"), 1000, &body, &["victim"]);
        if edge.push(vec![push]).await == [0] {
            refused_after = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_after = refused_after.expect("the time bound never refused a push");
    assert!(refused_after > 0, "the first pushes were taken");
    edge.wait_connections(1).await;
    let pushes = vec![
        key_push("after-1", 1000, b"ok", &["bystander"]),
        key_push("after-2", 1000, b"ok too", &["bystander"]),
    ];
    assert_eq!(edge.push(pushes).await, [1, 1]);
    assert_eq!(bystander.recv().await.body, &b"ok"[..]);
    assert_eq!(bystander.recv().await.body, &b"ok too"[..]);
    edge.assert_unaffected(&mut [&mut bystander]).await;
}
