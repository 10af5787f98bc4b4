//! Fuzzes every goim decoder with the same input: none may panic, and whatever they accept must be
//! within the limits they were given and re-encode to the bytes they consumed.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rim_proto::packet::DEFAULT_MAX_BODY;
use rim_proto::{message, stream};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    while let Ok(Some(packet)) = stream::decode(&mut buf, DEFAULT_MAX_BODY) {
        assert!(packet.body.len() <= DEFAULT_MAX_BODY);
        let wire = packet.to_bytes();
        assert_eq!(wire[..], data[consumed..consumed + wire.len()]);
        consumed += wire.len();
    }
    let _ = stream::missing(data, DEFAULT_MAX_BODY);
    if let Ok(packet) = message::decode(Bytes::copy_from_slice(data), DEFAULT_MAX_BODY) {
        assert_eq!(packet.encoded_len(), data.len());
    }
    for packet in message::Packets::new(Bytes::copy_from_slice(data), usize::MAX).flatten() {
        assert!(packet.encoded_len() <= data.len());
    }
});
