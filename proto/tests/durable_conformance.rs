//! Every byte example of `docs/rim-protocol-extension.md` against the `rim_proto::durable` codec.
//!
//! The examples are read from the page itself (its ```` ```rim-example ```` blocks), so the page and
//! the codec cannot drift apart: each example's value is built from its first line, encoded and
//! compared with the bytes; the bytes are decoded and compared with the value; refused examples must
//! fail with the named error. Hostile input beyond the page is fuzzed here too.

use bytes::Bytes;
use proptest::prelude::*;
use rim_proto::durable::{
    ACK, Ack, DurableError, DurablePush, MessageId, NotResumedReason, PUSH, Position, RESUME,
    ResumeAnswer, ResumeOutcome, RimAuth, StreamKind,
};
use rim_proto::message;
use serde::Deserialize;
use std::collections::HashMap;

const PAGE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/rim-protocol-extension.md"
));

/// One example block: its first line split into kind and `key=value` fields, and the other lines.
struct Example {
    kind: String,
    fields: HashMap<String, String>,
    rest: Vec<String>,
}

impl Example {
    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("example {:?} lacks `{name}=`", self.kind))
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> T {
        self.field(name)
            .parse()
            .unwrap_or_else(|_| panic!("`{name}` of {:?} is not a number", self.kind))
    }

    fn position(&self) -> Position {
        Position::new(self.number("epoch"), self.number("seq")).unwrap()
    }

    /// The lines after the first as one packet, whitespace ignored.
    fn bytes(&self) -> Bytes {
        let hex: String = self.rest.concat().split_whitespace().collect();
        assert!(
            hex.len().is_multiple_of(2),
            "odd hex digit count in {:?}",
            self.kind
        );
        (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex digits"))
            .collect::<Vec<u8>>()
            .into()
    }

    /// The lines after the first as one text (a JSON body).
    fn text(&self) -> String {
        self.rest.join("\n")
    }
}

fn examples() -> Vec<Example> {
    let mut examples = Vec::new();
    let mut lines = PAGE.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```rim-example" {
            continue;
        }
        let block: Vec<String> = lines
            .by_ref()
            .take_while(|line| line.trim() != "```")
            .map(str::to_owned)
            .collect();
        let (first, rest) = block.split_first().expect("an example block has lines");
        let mut words = first.split_whitespace();
        let kind = words.next().expect("an example names its kind").to_owned();
        let fields = words
            .map(|word| {
                let (key, value) = word.split_once('=').expect("fields are key=value");
                (key.to_owned(), value.to_owned())
            })
            .collect();
        examples.push(Example {
            kind,
            fields,
            rest: rest.to_vec(),
        });
    }
    examples
}

fn stream(example: &Example) -> StreamKind {
    match example.field("stream") {
        "user" => StreamKind::User,
        "room" => StreamKind::Room,
        other => panic!("unknown stream {other:?}"),
    }
}

fn outcome(example: &Example) -> ResumeOutcome {
    let reason = match example.field("status") {
        "resumed" => return ResumeOutcome::Resumed(example.number("count")),
        "epoch-changed" => NotResumedReason::EpochChanged,
        "expired" => NotResumedReason::Expired,
        "ahead" => NotResumedReason::Ahead,
        "unavailable" => NotResumedReason::Unavailable,
        "too-many" => NotResumedReason::TooMany,
        other => panic!("unknown status {other:?}"),
    };
    ResumeOutcome::NotResumed(reason)
}

/// The name an example uses for an error.
fn error_name(error: &DurableError) -> &'static str {
    match error {
        DurableError::Truncated { .. } => "truncated",
        DurableError::TooLong { .. } => "too-long",
        DurableError::Version(_) => "version",
        DurableError::Kind(_) => "kind",
        DurableError::Flags(_) => "flags",
        DurableError::Reserved => "reserved",
        DurableError::Outcome { .. } => "outcome",
        DurableError::PositionRange(_) => "position",
        DurableError::MessageId(_) => "message-id",
    }
}

/// The auth body's `rim` field, the way an edge reads it next to goim's fields.
#[derive(Deserialize)]
struct AuthBody {
    rim: Option<RimAuth>,
}

fn position_field(text: &str) -> Option<Position> {
    if text == "none" {
        return None;
    }
    let (epoch, seq) = text.split_once(':').expect("positions are epoch:seq");
    Some(Position::new(epoch.parse().unwrap(), seq.parse().unwrap()).unwrap())
}

/// Checks one example; returns its kind for the census.
fn check(example: &Example) -> &str {
    match example.kind.as_str() {
        "push" => {
            let push = DurablePush {
                kind: stream(example),
                replay: example.number("replay"),
                operation: example.number("operation"),
                message_id: example.field("id").parse::<MessageId>().unwrap(),
                position: example.position(),
                body: Bytes::copy_from_slice(example.field("body").as_bytes()),
            };
            let packet = example.bytes();
            assert_eq!(push.to_packet().to_bytes(), packet, "encoding {push:?}");
            let decoded = message::decode(packet, usize::MAX).unwrap();
            assert_eq!(decoded.op, PUSH);
            assert_eq!(DurablePush::decode(decoded.body).unwrap(), push);
        }
        "resume" => {
            let answer = ResumeAnswer {
                kind: stream(example),
                outcome: outcome(example),
                position: example.position(),
            };
            let packet = example.bytes();
            assert_eq!(answer.to_packet().to_bytes(), packet, "encoding {answer:?}");
            let decoded = message::decode(packet, usize::MAX).unwrap();
            assert_eq!(decoded.op, RESUME);
            assert_eq!(ResumeAnswer::decode(&decoded.body).unwrap(), answer);
        }
        "ack" => {
            let ack = Ack {
                position: example.position(),
            };
            let seq = example.number("packet-seq");
            let packet = example.bytes();
            assert_eq!(ack.to_packet(seq).to_bytes(), packet, "encoding {ack:?}");
            let decoded = message::decode(packet, usize::MAX).unwrap();
            assert_eq!((decoded.op, decoded.seq), (ACK, seq));
            assert_eq!(Ack::decode(&decoded.body).unwrap(), ack);
        }
        "auth" => {
            let body: AuthBody = serde_json::from_str(&example.text()).unwrap();
            let expected = RimAuth {
                user: position_field(example.field("user")),
                room: position_field(example.field("room")),
            };
            assert_eq!(body.rim, Some(expected));
        }
        "reject" => {
            let decoded = message::decode(example.bytes(), usize::MAX).unwrap();
            let op: i32 = example.number("op");
            assert_eq!(decoded.op, op, "the packet's op");
            let error = match op {
                PUSH => DurablePush::decode(decoded.body).err(),
                RESUME => ResumeAnswer::decode(&decoded.body).err(),
                ACK => Ack::decode(&decoded.body).err(),
                other => panic!("op {other} is not part of the extension"),
            }
            .unwrap_or_else(|| panic!("{:?} was accepted", example.fields));
            assert_eq!(error_name(&error), example.field("error"), "{error}");
        }
        "reject-auth" => {
            let error = serde_json::from_str::<RimAuth>(&example.text())
                .expect_err("the field must be refused")
                .to_string();
            assert!(
                error.contains(example.field("says")),
                "{error:?} does not mention {:?}",
                example.field("says")
            );
        }
        other => panic!("unknown example kind {other:?}"),
    }
    example.kind.as_str()
}

#[test]
fn every_example_of_the_protocol_page_matches_the_codec() {
    let examples = examples();
    let mut census: HashMap<&str, usize> = HashMap::new();
    for example in &examples {
        *census.entry(check(example)).or_default() += 1;
    }
    // The page must keep examples of every packet and every refusal kind it documents: losing a
    // block (a broken fence, say) must not pass silently.
    for (kind, at_least) in [
        ("push", 2),
        ("resume", 6),
        ("ack", 1),
        ("auth", 2),
        ("reject", 10),
        ("reject-auth", 4),
    ] {
        let found = census.get(kind).copied().unwrap_or(0);
        assert!(
            found >= at_least,
            "{found} {kind} examples, expected {at_least}"
        );
    }
}

proptest! {
    /// Any bytes at all: each decoder answers (value or error), never panics, and whatever it accepts
    /// encodes back to the same bytes.
    #[test]
    fn hostile_bodies_never_panic_and_accepted_ones_round_trip(
        body in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let bytes = Bytes::from(body.clone());
        if let Ok(push) = DurablePush::decode(bytes) {
            prop_assert_eq!(push.encode().to_vec(), body.clone());
        }
        if let Ok(answer) = ResumeAnswer::decode(&body) {
            prop_assert_eq!(answer.encode().to_vec(), body.clone());
        }
        if let Ok(ack) = Ack::decode(&body) {
            prop_assert_eq!(ack.encode().to_vec(), body.clone());
        }
    }

    /// Valid layouts with any byte changed: decoders still never panic; a changed version byte is
    /// always refused.
    #[test]
    fn flipped_bytes_in_valid_bodies_are_handled(at in 0usize..40, value in any::<u8>()) {
        let push = DurablePush {
            kind: StreamKind::User,
            replay: false,
            operation: 1000,
            message_id: MessageId([7; 16]),
            position: Position::new(1, 2).unwrap(),
            body: Bytes::from_static(b"x"),
        }
        .encode();
        let ack = Ack { position: Position::new(1, 2).unwrap() }.encode();
        let mut push = push.to_vec();
        let mut ack = ack.to_vec();
        push[at] = value;
        ack[at % rim_proto::durable::ACK_LEN] = value;
        let push_result = DurablePush::decode(Bytes::from(push));
        let ack_result = Ack::decode(&ack);
        if at == 0 && value != 1 {
            prop_assert!(push_result.is_err() && ack_result.is_err());
        }
    }

    /// Arbitrary JSON-ish text as the auth field never panics.
    #[test]
    fn hostile_auth_fields_never_panic(text in "\\PC{0,64}") {
        let _ = serde_json::from_str::<RimAuth>(&text);
    }
}
