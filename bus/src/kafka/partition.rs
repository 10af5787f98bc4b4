//! Choosing a record's partition in rim, the way librdkafka would.
//!
//! Grouping the records of one push by partition ([`super::group`]) needs the partition of each
//! record before it is produced, so rim's producer names the partition of every push record itself
//! instead of leaving it to librdkafka. To keep one key in one partition across that change (and
//! alongside other producers of the topic), it uses the hash of librdkafka's configured
//! partitioner: rim leaves `partitioner` at librdkafka's default, `consistent_random` (CRC-32 of
//! the key, modulo the partition count), and an operator may pick another one in the client
//! options. The key-hashing partitioners are reproduced here (CRC-32, Kafka's murmur2 as the
//! Java client's default, FNV-1a) and checked against librdkafka's own functions in the tests.
//! A `random` partitioner keeps no key in one partition: then rim names no partition and groups
//! nothing.
//!
//! Every push record names its partition, grouped or not: if librdkafka picked the partitions of
//! the ungrouped ones with a different partition count in mind (its metadata refreshed, ours
//! cached), one key's records could split between two partitions and lose their order.

use super::KafkaOptions;

/// How librdkafka's configured partitioner maps a key to a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyHash {
    /// `consistent`, `consistent_random` (librdkafka's default): CRC-32.
    Crc32,
    /// `murmur2`, `murmur2_random` (the Java client's default): murmur2, sign bit cleared.
    Murmur2,
    /// `fnv1a`, `fnv1a_random`: 32-bit FNV-1a (its absolute value, as Sarama).
    Fnv1a,
}

impl KeyHash {
    /// The hash of the `partitioner` the operator configured (the last one given wins, as in
    /// librdkafka), or librdkafka's default; `None` for partitioners that do not hash the key.
    pub(crate) fn configured(options: &KafkaOptions) -> Option<Self> {
        let name = options
            .pairs()
            .iter()
            .rev()
            .find(|(key, _)| key == "partitioner")
            .map_or("consistent_random", |(_, value)| value.trim());
        match name {
            "consistent" | "consistent_random" => Some(KeyHash::Crc32),
            "murmur2" | "murmur2_random" => Some(KeyHash::Murmur2),
            "fnv1a" | "fnv1a_random" => Some(KeyHash::Fnv1a),
            _ => None,
        }
    }

    /// The partition of `key` among `partitions` (at least 1), or `None` for an empty key, which
    /// the `*_random` partitioners place at random (rim's keys are never empty).
    pub(crate) fn partition(self, key: &[u8], partitions: i32) -> Option<i32> {
        if key.is_empty() || partitions < 1 {
            return None;
        }
        let hash = match self {
            KeyHash::Crc32 => crc32(key),
            KeyHash::Murmur2 => murmur2(key) & 0x7fff_ffff,
            KeyHash::Fnv1a => fnv1a(key),
        };
        // Below `partitions`, so it fits.
        i32::try_from(hash % partitions.unsigned_abs()).ok()
    }
}

/// CRC-32 (IEEE, reflected, as zlib's and librdkafka's `rd_crc32`).
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut n = 0;
        while n < 256 {
            let mut c = n as u32;
            let mut bit = 0;
            while bit < 8 {
                c = if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                bit += 1;
            }
            table[n] = c;
            n += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, byte| {
        TABLE[((crc ^ u32::from(*byte)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// Kafka's murmur2 (seed `0x9747b28c`), as the Java client's `Utils.murmur2` and librdkafka's
/// `rd_murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka hashes the length as a Java int.
    let mut h = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// 32-bit FNV-1a as librdkafka's `rd_fnv1a`: taken as a signed value, then its absolute value
/// (to match Sarama's hash partitioner).
fn fnv1a(data: &[u8]) -> u32 {
    let hash = data.iter().fold(0x811c_9dc5, |h: u32, byte| {
        (h ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    });
    // As C's `-h` on a 32-bit int, where i32::MIN stays itself.
    (hash as i32).wrapping_abs() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::bindings as rd;

    /// librdkafka's own partitioner for `hash`.
    type Native = unsafe extern "C" fn(
        *const rd::rd_kafka_topic_t,
        *const std::ffi::c_void,
        usize,
        i32,
        *mut std::ffi::c_void,
        *mut std::ffi::c_void,
    ) -> i32;

    fn native(hash: KeyHash) -> Native {
        match hash {
            KeyHash::Crc32 => rd::rd_kafka_msg_partitioner_consistent,
            KeyHash::Murmur2 => rd::rd_kafka_msg_partitioner_murmur2,
            KeyHash::Fnv1a => rd::rd_kafka_msg_partitioner_fnv1a,
        }
    }

    fn keys() -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = (0..2000)
            .map(|i| format!("key:user-{i}-{}", "x".repeat(i % 7)).into_bytes())
            .collect();
        keys.extend(
            [
                "a",
                "ab",
                "abc",
                "abcd",
                "mid:1",
                "broadcast",
                "room:live://1",
            ]
            .map(|k| k.into()),
        );
        keys.push("ключ:設備".as_bytes().to_vec());
        keys.push(vec![0xff, 0x80, 0x00, 0x7f, 0xfe]);
        keys
    }

    #[test]
    fn every_key_lands_where_librdkafka_puts_it() {
        for hash in [KeyHash::Crc32, KeyHash::Murmur2, KeyHash::Fnv1a] {
            for partitions in [1, 3, 12, 100, 1009] {
                for key in keys() {
                    // SAFETY: the key-hashing partitioners read only the key bytes (valid for
                    // `key.len()`) and the partition count; they do not touch the topic or the
                    // opaques, so null pointers are fine for them.
                    let expected = unsafe {
                        native(hash)(
                            std::ptr::null(),
                            key.as_ptr().cast(),
                            key.len(),
                            partitions,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                        )
                    };
                    assert_eq!(
                        hash.partition(&key, partitions),
                        Some(expected),
                        "{hash:?}, {partitions} partitions, key {key:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn murmur2_matches_the_java_clients_known_values() {
        // From Kafka's UtilsTest.testMurmur2 (as signed Java ints).
        for (key, expected) in [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ] {
            assert_eq!(murmur2(key.as_bytes()) as i32, expected, "{key}");
        }
    }

    #[test]
    fn the_configured_partitioner_decides_and_random_ones_hash_nothing() {
        let options = |text: &str| text.parse::<KafkaOptions>().unwrap();
        assert_eq!(
            KeyHash::configured(&KafkaOptions::default()),
            Some(KeyHash::Crc32)
        );
        assert_eq!(
            KeyHash::configured(&options("partitioner=murmur2_random")),
            Some(KeyHash::Murmur2)
        );
        assert_eq!(
            KeyHash::configured(&options("partitioner=murmur2,partitioner=fnv1a")),
            Some(KeyHash::Fnv1a)
        );
        assert_eq!(KeyHash::configured(&options("partitioner=random")), None);
        assert_eq!(KeyHash::Crc32.partition(b"", 12), None);
    }
}
