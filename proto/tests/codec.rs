//! Codec tests: the byte examples of PROTOCOL.md, round trips, and strict length validation.

use bytes::{Bytes, BytesMut};
use rim_proto::batch::{self, Batch};
use rim_proto::packet::DEFAULT_MAX_BODY;
use rim_proto::{DecodeError, Packet, message, op, stream};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn byte_examples_of_the_protocol_page() {
    let auth_reply = Packet::new(1, op::AUTH_REPLY, 1, Bytes::new());
    assert_eq!(
        auth_reply.to_bytes()[..],
        hex("00000010 0010 0001 00000008 00000001")
    );
    let heartbeat = Packet::new(1, op::HEARTBEAT, 1, Bytes::new());
    assert_eq!(
        heartbeat.to_bytes()[..],
        hex("00000010 0010 0001 00000002 00000001")
    );
    let hb_reply = heartbeat.reply(op::HEARTBEAT_REPLY, 1000i32.to_be_bytes().to_vec());
    assert_eq!(
        hb_reply.to_bytes()[..],
        hex("00000014 0010 0001 00000003 00000001 000003e8")
    );
    let push = hex("00000015 0010 0001 000003e8 00000000 68656c6c6f");
    let ws_push = batch::encode_push(1000, b"hello");
    assert_eq!(batch::inner(&ws_push)[..], push[..]);
    let mut expected_ws = hex("00000025 0010 0001 00000009 00000000");
    expected_ws.extend_from_slice(&push);
    assert_eq!(ws_push[..], expected_ws[..]);
    let change = hex("0000001b 0010 0001 0000000c 00000002 6c6976653a2f2f31303031");
    let decoded = message::decode(Bytes::from(change.clone()), DEFAULT_MAX_BODY).unwrap();
    assert_eq!(
        decoded,
        Packet::new(1, op::CHANGE_ROOM, 2, &b"live://1001"[..])
    );
    let reply = decoded.reply(op::CHANGE_ROOM_REPLY, decoded.body.clone());
    let mut expected_reply = change;
    expected_reply[11] = 0x0d;
    assert_eq!(reply.to_bytes()[..], expected_reply[..]);
}

#[test]
fn stream_decoder_waits_for_whole_packets() {
    let packet = Packet::new(1, 1000, 7, &b"hello"[..]).to_bytes();
    let mut buf = BytesMut::new();
    for (i, byte) in packet.iter().enumerate() {
        let expected = if i < 16 { 16 - i } else { packet.len() - i };
        assert_eq!(stream::missing(&buf, 16), expected);
        assert_eq!(stream::decode(&mut buf, 16), Ok(None));
        buf.extend_from_slice(&[*byte]);
    }
    let decoded = stream::decode(&mut buf, 16).unwrap().unwrap();
    assert_eq!(decoded.body, Bytes::from_static(b"hello"));
    assert!(buf.is_empty());
}

#[test]
fn stream_decoder_rejects_bad_headers_before_the_body_arrives() {
    let cases: [(&str, DecodeError); 4] = [
        (
            "00001011 0010 0001 00000007 00000001",
            DecodeError::BodyTooLarge {
                len: 4097,
                max: 4096,
            },
        ),
        (
            "ffffffff 0010 0001 00000007 00000001",
            DecodeError::PacketTooShort(-1),
        ),
        (
            "0000000f 0010 0001 00000007 00000001",
            DecodeError::PacketTooShort(15),
        ),
        (
            "00000020 0011 0001 00000007 00000001",
            DecodeError::BadHeaderLength(17),
        ),
    ];
    for (header, expected) in cases {
        let mut buf = BytesMut::from(&hex(header)[..]);
        assert_eq!(stream::decode(&mut buf, DEFAULT_MAX_BODY), Err(expected));
    }
    let limit = hex("00001010 0010 0001 00000007 00000001");
    let mut buf = BytesMut::from(&limit[..]);
    assert_eq!(stream::decode(&mut buf, DEFAULT_MAX_BODY), Ok(None));
}

#[test]
fn message_decoder_requires_the_exact_length() {
    let packet = Packet::new(1, op::AUTH, 1, &b"{}"[..]).to_bytes();
    let mut longer = packet.to_vec();
    longer.push(0);
    assert_eq!(
        message::decode(Bytes::from(longer), DEFAULT_MAX_BODY),
        Err(DecodeError::LengthMismatch {
            claimed: 18,
            present: 19
        })
    );
    assert_eq!(
        message::decode(packet.slice(..17), DEFAULT_MAX_BODY),
        Err(DecodeError::LengthMismatch {
            claimed: 18,
            present: 17
        })
    );
    assert_eq!(
        message::decode(packet.slice(..5), DEFAULT_MAX_BODY),
        Err(DecodeError::Truncated(5))
    );
    assert!(message::decode(packet, DEFAULT_MAX_BODY).is_ok());
}

#[test]
fn batch_merges_pushes_under_one_header() {
    let first = batch::encode_push(1000, b"a");
    let second = batch::encode_push(1001, b"bc");
    let mut merged = Batch::with_capacity(64);
    assert!(merged.is_empty());
    merged.push_batch(&first);
    merged.push_batch(&second);
    merged.push_packet(&Packet::new(1, op::HEARTBEAT_REPLY, 3, Bytes::new()));
    let merged = merged.finish();
    let outer = message::decode(merged.clone(), usize::MAX).unwrap();
    assert_eq!((outer.op, outer.ver, outer.seq), (op::RAW, 1, 0));
    let inner: Vec<Packet> = message::Packets::new(outer.body, usize::MAX)
        .collect::<Result<_, _>>()
        .unwrap();
    let ops: Vec<i32> = inner.iter().map(|p| p.op).collect();
    assert_eq!(ops, [1000, 1001, op::HEARTBEAT_REPLY]);
    assert_eq!(inner[1].body, Bytes::from_static(b"bc"));
}

#[test]
fn packets_iterator_stops_at_a_truncated_packet() {
    let mut bytes = Packet::new(1, 1000, 0, &b"ok"[..]).to_bytes().to_vec();
    bytes.extend_from_slice(&Packet::new(1, 1000, 0, &b"cut"[..]).to_bytes()[..18]);
    let results: Vec<_> = message::Packets::new(Bytes::from(bytes), 64).collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert_eq!(
        results[1],
        Err(DecodeError::LengthMismatch {
            claimed: 19,
            present: 18
        })
    );
}

#[test]
fn op_lists_parse_like_goim() {
    assert_eq!(op::parse_op_list(b"1000, 1001,,x,1002"), [1000, 1001, 1002]);
    assert!(op::parse_op_list(b"").is_empty());
}
