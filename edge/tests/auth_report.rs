//! The auth reply waits for the connect to be acknowledged by the session observer (the control
//! plane, through edgelink), so a push sent right after the reply finds the session; the wait is
//! bounded so that a silent control plane never holds logins longer than the bound.

mod common;

use std::sync::Arc;

use common::{Kind, key_push, start_with, tokens};
use parking_lot::Mutex;
use rim_edge::EdgeHooks;
use rim_edge::channel::Channel;
use rim_edge::config::AuthMode;
use rim_edge::hooks::{ConnectAck, EdgeEvents};
use rim_proto::{Packet, op};
use tokio::sync::oneshot;

/// Hands out one acknowledgement per connect; they resolve only when the test says so.
#[derive(Default)]
struct HeldAcks {
    pending: Mutex<Vec<oneshot::Sender<()>>>,
}

impl HeldAcks {
    fn ack_all(&self) {
        for ack in self.pending.lock().drain(..) {
            let _ = ack.send(());
        }
    }

    fn outstanding(&self) -> usize {
        self.pending.lock().len()
    }
}

impl EdgeEvents for HeldAcks {
    fn connected(&self, _channel: &Channel) -> Option<ConnectAck> {
        let (ack, acked) = oneshot::channel();
        self.pending.lock().push(ack);
        Some(Box::pin(async move {
            let _ = acked.await;
        }))
    }
}

async fn edge_with(acks: &Arc<HeldAcks>, timeout_ms: u64) -> common::TestEdge {
    let hooks = EdgeHooks {
        events: acks.clone(),
        ..EdgeHooks::default()
    };
    start_with(AuthMode::Jwt, hooks, |c| {
        c.edge_auth_report_timeout_ms = timeout_ms;
    })
    .await
}

async fn the_reply_waits_for_the_acknowledgement(kind: Kind) {
    let acks = Arc::new(HeldAcks::default());
    let edge = edge_with(&acks, 60_000).await;
    let mut client = edge.connect(kind).await;
    let body = tokens::body_for("waits", "", &[1000]);
    client.send(&Packet::new(1, op::AUTH, 1, body)).await;
    common::wait_until(|| acks.outstanding() == 1).await;
    assert!(client.silent_for(200).await, "replied before the ack");
    // A push that arrives while the reply waits is sent after it.
    assert_eq!(
        edge.push(vec![key_push("early", 1000, b"early", &["waits"])])
            .await,
        [1]
    );
    acks.ack_all();
    let reply = client.recv().await;
    assert_eq!(
        (reply.op, reply.seq, reply.body.len()),
        (op::AUTH_REPLY, 1, 0)
    );
    assert_eq!(client.recv().await.body, &b"early"[..]);
}

async fn without_an_acknowledgement_the_reply_comes_after_the_bound(kind: Kind) {
    let acks = Arc::new(HeldAcks::default());
    let edge = edge_with(&acks, 200).await;
    let mut client = edge.client(kind, "unacked", "", &[1000]).await;
    assert_eq!(acks.outstanding(), 1, "never acknowledged");
    client.heartbeat().await;
}

both_transports!(
    the_reply_waits_for_the_acknowledgement,
    without_an_acknowledgement_the_reply_comes_after_the_bound,
);
