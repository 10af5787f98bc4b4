//! Locating clients without coordinates: a MaxMind DB the test builds itself, trusted proxy headers, the order of
//! precedence, and reloading the database.

mod common;

use std::net::IpAddr;
use std::path::Path;

use common::mmdb::{Entry, city_database};
use common::*;
use rim_balancer::{
    BalancerConfig, Client, GeoIp, GeoPoint, LocationSource, Locator, Platform, rank,
};

const SHANGHAI_NET: &str = "203.0.113.0/24";
const FRANKFURT_NET: &str = "198.51.100.0/24";
const BEIJING_NET: &str = "2001:db8::/32";

fn entries(v4_first: (f64, f64), v4_second: (f64, f64)) -> Vec<Entry> {
    vec![
        Entry {
            network: SHANGHAI_NET,
            lat: v4_first.0,
            lon: v4_first.1,
        },
        Entry {
            network: FRANKFURT_NET,
            lat: v4_second.0,
            lon: v4_second.1,
        },
        Entry {
            network: BEIJING_NET,
            lat: BEIJING.0,
            lon: BEIJING.1,
        },
    ]
}

fn write_database(path: &Path, first: (f64, f64), second: (f64, f64)) {
    std::fs::write(path, city_database(&entries(first, second))).unwrap();
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn near(found: Option<GeoPoint>, expected: (f64, f64)) -> bool {
    found.is_some_and(|p| p.distance_km(&point(expected)) < 1.0)
}

fn no_headers(_: &str) -> Option<&'static str> {
    None
}

#[test]
fn the_hand_written_test_database_is_valid_maxmind_db() {
    let bytes = city_database(&entries(SHANGHAI, FRANKFURT));
    let reader = maxminddb::Reader::from_source(bytes).unwrap();
    reader.verify().unwrap();
    assert_eq!(reader.metadata().ip_version, 6);
}

#[test]
fn ips_of_the_database_are_located_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    write_database(&path, SHANGHAI, FRANKFURT);
    let db = GeoIp::open(&path).unwrap();
    assert!(near(db.locate(ip("203.0.113.7")), SHANGHAI));
    assert!(near(db.locate(ip("198.51.100.200")), FRANKFURT));
    assert!(near(db.locate(ip("::ffff:198.51.100.9")), FRANKFURT));
    assert!(near(db.locate(ip("2001:db8:1::1")), BEIJING));
    assert_eq!(db.locate(ip("192.0.2.1")), None);
    assert_eq!(db.locate(ip("2001:db9::1")), None);
}

#[test]
fn an_ip_from_the_database_is_answered_the_nodes_of_its_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    write_database(&path, SHANGHAI, FRANKFURT);
    let config = BalancerConfig {
        httpdns_geoip_db: Some(path),
        ..BalancerConfig::default()
    };
    let locator = Locator::new(&config).unwrap();
    let nodes = [
        node("eu-1", "eu", FRANKFURT),
        node("sh-1", "sh", SHANGHAI),
        node("bj-1", "bj", BEIJING),
    ];
    for (client_ip, region) in [
        ("203.0.113.50", "sh"),
        ("198.51.100.50", "eu"),
        ("2001:db8::50", "bj"),
    ] {
        let located = locator.locate(None, no_headers, Some(ip(client_ip)));
        assert_eq!(located.source, LocationSource::GeoIp);
        let client = Client {
            location: located.location,
            region: located.region,
            platform: Platform::Native,
            seed: Some(7),
        };
        let ranked = rank(&nodes, &client, now(), &config);
        assert_eq!(ranked[0].region, region, "{client_ip}");
    }
}

#[test]
fn precedence_is_query_then_trusted_headers_then_ip_then_default_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    write_database(&path, SHANGHAI, FRANKFURT);
    let config = BalancerConfig {
        httpdns_geoip_db: Some(path),
        httpdns_latitude_header: Some("cf-iplatitude".into()),
        httpdns_longitude_header: Some("cf-iplongitude".into()),
        httpdns_default_region: Some("sh".into()),
        ..BalancerConfig::default()
    };
    let locator = Locator::new(&config).unwrap();
    let cloudflare = |name: &str| match name {
        "cf-iplatitude" => Some(" 50.1109"),
        "cf-iplongitude" => Some("8.6821"),
        _ => None,
    };
    let shanghai_ip = Some(ip("203.0.113.1"));

    let query = locator.locate(Some(point(BEIJING)), cloudflare, shanghai_ip);
    assert_eq!(query.source, LocationSource::Query);
    assert!(near(query.location, BEIJING));

    let headers = locator.locate(None, cloudflare, shanghai_ip);
    assert_eq!(headers.source, LocationSource::ProxyHeaders);
    assert!(near(headers.location, FRANKFURT));

    let broken = |name: &str| (name == "cf-iplatitude").then_some("north").or(Some("8.6"));
    let by_ip = locator.locate(None, broken, shanghai_ip);
    assert_eq!(by_ip.source, LocationSource::GeoIp);
    assert!(near(by_ip.location, SHANGHAI));

    let unknown_ip = locator.locate(None, no_headers, Some(ip("192.0.2.1")));
    assert_eq!(unknown_ip.source, LocationSource::DefaultRegion);
    assert_eq!(
        (unknown_ip.location, unknown_ip.region.as_deref()),
        (None, Some("sh"))
    );
    let nothing =
        Locator::new(&BalancerConfig::default())
            .unwrap()
            .locate(None, cloudflare, shanghai_ip);
    assert_eq!(nothing.source, LocationSource::Unknown);
    assert_eq!((nothing.location, nothing.region), (None, None));
}

#[test]
fn the_client_ip_header_is_trusted_only_when_configured_and_its_last_entry_is_used() {
    let forwarded = |name: &str| (name == "x-forwarded-for").then_some("192.0.2.99, 203.0.113.9");
    let peer = Some(ip("10.0.0.1"));
    let untrusting = Locator::new(&BalancerConfig::default()).unwrap();
    assert_eq!(untrusting.client_ip(forwarded, peer), peer);
    let trusting = Locator::new(&BalancerConfig {
        httpdns_client_ip_header: Some("x-forwarded-for".into()),
        ..BalancerConfig::default()
    })
    .unwrap();
    assert_eq!(trusting.client_ip(forwarded, peer), Some(ip("203.0.113.9")));
    let garbage = |_: &str| Some("not an address");
    assert_eq!(trusting.client_ip(garbage, peer), peer);
}

#[test]
fn reload_swaps_in_a_new_database_and_keeps_the_old_one_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    write_database(&path, SHANGHAI, FRANKFURT);
    let db = GeoIp::open(&path).unwrap();
    assert!(near(db.locate(ip("203.0.113.7")), SHANGHAI));
    write_database(&path, FRANKFURT, SHANGHAI);
    db.reload().unwrap();
    assert!(near(db.locate(ip("203.0.113.7")), FRANKFURT));
    std::fs::write(&path, b"not a database").unwrap();
    let error = db.reload().unwrap_err();
    assert!(error.to_string().contains("city.mmdb"), "{error}");
    assert!(near(db.locate(ip("203.0.113.7")), FRANKFURT));
}

#[test]
fn a_missing_or_broken_database_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mmdb");
    assert!(GeoIp::open(&missing).is_err());
    let config = BalancerConfig {
        httpdns_geoip_db: Some(missing),
        ..BalancerConfig::default()
    };
    assert!(Locator::new(&config).is_err());
}
