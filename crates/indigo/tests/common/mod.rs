//! Helpers the integration tests share.

use indigo::Indigo;

/// The value of one of `db`'s gauges (what `/metrics` reports).
pub fn gauge(db: &Indigo, name: &str) -> f64 {
    db.gauges()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap()
}
