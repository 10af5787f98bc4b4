//! Property tests: every packet round-trips through both decoders, and arbitrary bytes never panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rim_proto::{Packet, message, stream};

fn packet() -> impl Strategy<Value = Packet> {
    (
        any::<i16>(),
        any::<i32>(),
        any::<i32>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(ver, op, seq, body)| Packet::new(ver, op, seq, body))
}

proptest! {
    #[test]
    fn stream_round_trip_in_any_chunking(packets in proptest::collection::vec(packet(), 1..8), chunk in 1usize..64) {
        let mut wire = BytesMut::new();
        for p in &packets {
            p.encode_into(&mut wire);
        }
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(p) = stream::decode(&mut buf, 300).unwrap() {
                decoded.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    #[test]
    fn message_round_trip(p in packet()) {
        prop_assert_eq!(message::decode(p.to_bytes(), 300).unwrap(), p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..5000) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(p)) = stream::decode(&mut buf, max) {
            prop_assert!(p.body.len() <= max);
        }
        let _ = stream::missing(&bytes, max);
        if let Ok(p) = message::decode(Bytes::from(bytes.clone()), max) {
            prop_assert_eq!(p.encoded_len(), bytes.len());
        }
        for p in message::Packets::new(Bytes::from(bytes), max).flatten() {
            prop_assert!(p.body.len() <= max);
        }
    }
}
