//! A minimal writer of MaxMind DB files (format 2.0, <https://maxmind.github.io/MaxMind-DB/>), so the GeoIP tests
//! build their own small City-shaped database instead of shipping a binary one.
//!
//! It writes an IPv6 tree with 24-bit records; IPv4 networks are stored under `::/96`, where readers look them up.
//! Every network maps to a record `{"location": {"latitude": .., "longitude": ..}}`. Networks must not overlap.

use std::net::IpAddr;

/// A network (`address/prefix`) and the position its record gives.
pub struct Entry {
    pub network: &'static str,
    pub lat: f64,
    pub lon: f64,
}

/// What a search tree record points to.
#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// The whole database file for `entries`.
pub fn city_database(entries: &[Entry]) -> Vec<u8> {
    let mut tree: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    let mut data = Vec::new();
    for entry in entries {
        let (bits, prefix) = network_bits(entry.network);
        let offset = data.len();
        map(&mut data, 1);
        string(&mut data, "location");
        map(&mut data, 2);
        string(&mut data, "latitude");
        double(&mut data, entry.lat);
        string(&mut data, "longitude");
        double(&mut data, entry.lon);
        let mut node = 0;
        for depth in 0..prefix {
            let bit = usize::from((bits >> (127 - depth)) & 1 == 1);
            if depth + 1 == prefix {
                tree[node][bit] = Record::Data(offset);
            } else {
                node = match tree[node][bit] {
                    Record::Node(next) => next,
                    _ => {
                        tree.push([Record::Empty; 2]);
                        tree[node][bit] = Record::Node(tree.len() - 1);
                        tree.len() - 1
                    }
                };
            }
        }
    }
    let node_count = tree.len();
    let mut file = Vec::new();
    for records in &tree {
        for record in records {
            let value = match *record {
                Record::Empty => node_count,
                Record::Node(next) => next,
                Record::Data(offset) => node_count + 16 + offset,
            };
            let value = u32::try_from(value).expect("database too large for 24-bit records");
            file.extend_from_slice(&value.to_be_bytes()[1..]);
        }
    }
    file.extend_from_slice(&[0; 16]);
    file.extend_from_slice(&data);
    file.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    map(&mut file, 9);
    string(&mut file, "binary_format_major_version");
    unsigned(&mut file, 5, 2, 2);
    string(&mut file, "binary_format_minor_version");
    unsigned(&mut file, 5, 2, 0);
    string(&mut file, "build_epoch");
    extended(&mut file, 9, 8);
    file.extend_from_slice(&1_800_000_000u64.to_be_bytes());
    string(&mut file, "database_type");
    string(&mut file, "rim-Test-City");
    string(&mut file, "description");
    map(&mut file, 1);
    string(&mut file, "en");
    string(&mut file, "rim balancer test database");
    string(&mut file, "ip_version");
    unsigned(&mut file, 5, 2, 6);
    string(&mut file, "languages");
    extended(&mut file, 11, 1);
    string(&mut file, "en");
    string(&mut file, "node_count");
    unsigned(&mut file, 6, 4, node_count as u64);
    string(&mut file, "record_size");
    unsigned(&mut file, 5, 2, 24);
    file
}

/// The network as 128 bits (IPv4 under `::/96`) and its prefix length in that space.
fn network_bits(network: &str) -> (u128, usize) {
    let (address, prefix) = network.split_once('/').expect("address/prefix");
    let prefix: usize = prefix.parse().expect("prefix length");
    match address.parse::<IpAddr>().expect("IP address") {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), prefix + 96),
        IpAddr::V6(v6) => (u128::from(v6), prefix),
    }
}

/// A control byte for a standard type (1..=7) and a size below 29.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let size = u8::try_from(size)
        .ok()
        .filter(|s| *s < 29)
        .expect("small size");
    out.push((kind << 5) | size);
}

/// A control byte for an extended type (8..=15): type 0 in the control byte, then `kind - 7`.
fn extended(out: &mut Vec<u8>, kind: u8, size: usize) {
    control(out, 0, size);
    out.push(kind - 7);
}

fn map(out: &mut Vec<u8>, pairs: usize) {
    control(out, 7, pairs);
}

fn string(out: &mut Vec<u8>, s: &str) {
    control(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn double(out: &mut Vec<u8>, value: f64) {
    control(out, 3, 8);
    out.extend_from_slice(&value.to_be_bytes());
}

/// An unsigned integer of `bytes` big-endian bytes, of standard type `kind` (5 = uint16, 6 = uint32).
fn unsigned(out: &mut Vec<u8>, kind: u8, bytes: usize, value: u64) {
    control(out, kind, bytes);
    out.extend_from_slice(&value.to_be_bytes()[8 - bytes..]);
}
