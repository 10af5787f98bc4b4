//! Where things are on Earth: a validated latitude/longitude pair and the great-circle distance between two of
//! them.
//!
//! Coordinates reach the balancer from the network (an edge's registration, a client's query string), so a
//! [`GeoPoint`] can only be built through [`GeoPoint::new`], which rejects non-finite and out-of-range values.
//! Every later computation can then trust that distances are finite numbers, which keeps the ranking a total order.

use geo::{Distance, Haversine, Point};
use serde::Serialize;

/// A point on Earth in degrees (WGS84 latitude/longitude), known to be finite and in range.
///
/// It exists so that node and client locations are validated once, at the boundary, and never again.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GeoPoint {
    lat: f64,
    lon: f64,
}

/// Why a latitude/longitude pair was refused; the control plane turns it into a 400 answer.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum InvalidLocation {
    /// Latitude is not a number in [-90, 90].
    #[error("latitude {0} is not a number in [-90, 90]")]
    Latitude(f64),
    /// Longitude is not a number in [-180, 180].
    #[error("longitude {0} is not a number in [-180, 180]")]
    Longitude(f64),
}

impl GeoPoint {
    /// Validates a latitude/longitude pair in degrees; the only way to make a [`GeoPoint`].
    pub fn new(lat: f64, lon: f64) -> Result<Self, InvalidLocation> {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(InvalidLocation::Latitude(lat));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(InvalidLocation::Longitude(lon));
        }
        Ok(Self { lat, lon })
    }

    /// Latitude in degrees, for callers that display or store the point.
    pub fn lat(&self) -> f64 {
        self.lat
    }

    /// Longitude in degrees, for callers that display or store the point.
    pub fn lon(&self) -> f64 {
        self.lon
    }

    /// Great-circle (Haversine, mean Earth radius) distance in kilometres: the "how far" the ranking starts from.
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        Haversine.distance(self.point(), other.point()) / 1000.0
    }

    fn point(&self) -> Point<f64> {
        Point::new(self.lon, self.lat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_and_non_finite_coordinates() {
        assert_eq!(
            GeoPoint::new(90.5, 0.0),
            Err(InvalidLocation::Latitude(90.5))
        );
        assert_eq!(
            GeoPoint::new(0.0, -180.5),
            Err(InvalidLocation::Longitude(-180.5))
        );
        assert!(GeoPoint::new(f64::NAN, 0.0).is_err());
        assert!(GeoPoint::new(0.0, f64::INFINITY).is_err());
        assert!(GeoPoint::new(-90.0, 180.0).is_ok());
    }

    #[test]
    fn distance_matches_known_city_pairs() {
        let shanghai = GeoPoint::new(31.2304, 121.4737).unwrap();
        let beijing = GeoPoint::new(39.9042, 116.4074).unwrap();
        let paris = GeoPoint::new(48.8566, 2.3522).unwrap();
        // Published great-circle distances: Shanghai-Beijing ~1067 km, Shanghai-Paris ~9260 km.
        assert!((shanghai.distance_km(&beijing) - 1067.0).abs() < 10.0);
        assert!((shanghai.distance_km(&paris) - 9260.0).abs() < 30.0);
        assert_eq!(shanghai.distance_km(&shanghai), 0.0);
    }
}
