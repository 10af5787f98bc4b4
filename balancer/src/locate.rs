//! Locating a client: where the ranking should measure distances from, when the client may not say.
//!
//! Sources, in order of precedence (the first that gives a valid position wins):
//!
//! 1. **explicit coordinates** the client sent (`lat`/`lon`, validated by the caller);
//! 2. **trusted proxy headers** carrying the position (e.g. Cloudflare's `cf-iplatitude` / `cf-iplongitude`), read
//!    only when their names are configured: anyone can send such a header, so only a proxy that overwrites them may
//!    be trusted;
//! 3. **the client's IP address** looked up in a MaxMind DB ([`GeoIp`]); the address is the connection's peer, or
//!    the right-most entry of a configured client-IP header set by a trusted proxy;
//! 4. **the default region**, when configured: no position, but a region hint so such clients land somewhere
//!    sensible instead of on whichever node is emptiest worldwide.
//!
//! The balancer knows nothing of HTTP: the caller hands over a header lookup function and the peer address.

use std::net::IpAddr;

use serde::Serialize;

use crate::config::BalancerConfig;
use crate::geoip::{GeoIp, GeoIpError};
use crate::location::GeoPoint;

/// Which source located the client; shown in rim's explained answer so a surprising answer can be traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationSource {
    /// Coordinates sent by the client.
    Query,
    /// The configured trusted proxy headers.
    ProxyHeaders,
    /// The GeoIP database, from the client's IP address.
    GeoIp,
    /// Nothing located the client; the configured default region is its region hint.
    DefaultRegion,
    /// Nothing located the client and no default region is configured.
    Unknown,
}

/// Where a client is, as far as the [`Locator`] could tell.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Located {
    /// Position to measure distances from, if any source gave one.
    pub location: Option<GeoPoint>,
    /// The default region, when no source gave a position (use it as the client's region hint unless the client
    /// named one).
    pub region: Option<String>,
    /// Which source decided.
    pub source: LocationSource,
}

/// Locates clients from the configured sources; built once at start-up and shared by every request.
pub struct Locator {
    geoip: Option<GeoIp>,
    location_headers: Option<(String, String)>,
    client_ip_header: Option<String>,
    default_region: Option<String>,
}

impl Locator {
    /// Builds the locator `config` describes, opening the GeoIP database if one is configured.
    pub fn new(config: &BalancerConfig) -> Result<Self, GeoIpError> {
        let non_empty = |s: &Option<String>| {
            s.as_ref()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(Self {
            geoip: config
                .httpdns_geoip_db
                .as_ref()
                .map(GeoIp::open)
                .transpose()?,
            location_headers: non_empty(&config.httpdns_latitude_header)
                .zip(non_empty(&config.httpdns_longitude_header)),
            client_ip_header: non_empty(&config.httpdns_client_ip_header),
            default_region: non_empty(&config.httpdns_default_region),
        })
    }

    /// The GeoIP database in use, if any (for example to [`GeoIp::reload`] it on a signal).
    pub fn geoip(&self) -> Option<&GeoIp> {
        self.geoip.as_ref()
    }

    /// Locates a client from its explicit coordinates `query`, the request headers (`header(name)` gives a header's
    /// value, if present and text) and the connection's `peer` address, in the order of the module docs.
    pub fn locate<'r>(
        &self,
        query: Option<GeoPoint>,
        header: impl Fn(&str) -> Option<&'r str>,
        peer: Option<IpAddr>,
    ) -> Located {
        let found = |location: GeoPoint, source| Located {
            location: Some(location),
            region: None,
            source,
        };
        if let Some(location) = query {
            return found(location, LocationSource::Query);
        }
        if let Some(location) = self.header_location(&header) {
            return found(location, LocationSource::ProxyHeaders);
        }
        let ip = self.client_ip(&header, peer);
        if let Some(location) = self
            .geoip
            .as_ref()
            .zip(ip)
            .and_then(|(db, ip)| db.locate(ip))
        {
            return found(location, LocationSource::GeoIp);
        }
        Located {
            location: None,
            region: self.default_region.clone(),
            source: match self.default_region {
                Some(_) => LocationSource::DefaultRegion,
                None => LocationSource::Unknown,
            },
        }
    }

    /// The client's IP address: the right-most entry of the trusted client-IP header (the one the trusted proxy
    /// appended) when configured and valid, else the peer address.
    pub fn client_ip<'r>(
        &self,
        header: impl Fn(&str) -> Option<&'r str>,
        peer: Option<IpAddr>,
    ) -> Option<IpAddr> {
        let forwarded = self
            .client_ip_header
            .as_deref()
            .and_then(&header)
            .and_then(|value| value.rsplit(',').next())
            .and_then(|entry| entry.trim().parse().ok());
        forwarded.or(peer)
    }

    fn header_location<'r>(&self, header: impl Fn(&str) -> Option<&'r str>) -> Option<GeoPoint> {
        let (lat_name, lon_name) = self.location_headers.as_ref()?;
        let lat: f64 = header(lat_name)?.trim().parse().ok()?;
        let lon: f64 = header(lon_name)?.trim().parse().ok()?;
        GeoPoint::new(lat, lon).ok()
    }
}
