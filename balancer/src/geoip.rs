//! GeoIP: where an IP address is, from a MaxMind DB (`.mmdb`) file, for clients that send no coordinates.
//!
//! The standard format (GeoIP2/GeoLite2 City, DB-IP, IPinfo and others publish it) is read with the `maxminddb`
//! crate; only `location.latitude` and `location.longitude` of the matching record are used, so any database with
//! that shape works and one without it (a Country database) simply locates nobody. The file is read into memory
//! once; [`GeoIp::reload`] swaps in a fresh copy atomically (the databases are updated weekly), while lookups on
//! other threads keep going on the old copy until they finish.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use maxminddb::{MaxMindDbError, Reader};
use serde::Deserialize;

use crate::location::GeoPoint;

/// An open MaxMind DB, shared by every request; cheap to query from many threads at once.
pub struct GeoIp {
    path: PathBuf,
    reader: ArcSwap<Reader<Vec<u8>>>,
}

/// Why a database could not be opened or reloaded; the control plane refuses to start on it (a configured database
/// that silently locates nobody would be worse).
#[derive(Debug, thiserror::Error)]
#[error("GeoIP database {path}: {source}")]
pub struct GeoIpError {
    /// The file that was read.
    pub path: PathBuf,
    /// What was wrong with it.
    #[source]
    pub source: MaxMindDbError,
}

/// The part of a City record the balancer reads; serde skips everything else.
#[derive(Deserialize)]
struct Record {
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl GeoIp {
    /// Reads and checks the database at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, GeoIpError> {
        let path = path.into();
        let reader = read(&path)?;
        Ok(Self {
            path,
            reader: ArcSwap::from_pointee(reader),
        })
    }

    /// Re-reads the file given to [`GeoIp::open`] and, if it is a valid database, answers from it from now on; on
    /// error the previous database stays in use.
    pub fn reload(&self) -> Result<(), GeoIpError> {
        self.reader.store(Arc::new(read(&self.path)?));
        Ok(())
    }

    /// Where `ip` is, if the database knows it and gives a valid position. IPv4-mapped IPv6 addresses (what a
    /// dual-stack socket reports for IPv4 clients) are looked up as the IPv4 address they carry.
    pub fn locate(&self, ip: IpAddr) -> Option<GeoPoint> {
        let reader = self.reader.load();
        let record: Record = reader.lookup(ip.to_canonical()).ok()?.decode().ok()??;
        let location = record.location?;
        GeoPoint::new(location.latitude?, location.longitude?).ok()
    }
}

fn read(path: &Path) -> Result<Reader<Vec<u8>>, GeoIpError> {
    Reader::open_readfile(path).map_err(|source| GeoIpError {
        path: path.to_owned(),
        source,
    })
}
