//! The gateway's duties before a request reaches the core: authentication by
//! static token, authorisation to a tenant and its databases, per-token rate
//! limits (token buckets), and request metrics.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use crate::settings::TokenGrant;
use crate::ApiError;

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    /// `None`: no authentication configured, everything is allowed.
    pub grant: Option<TokenGrant>,
}

impl Identity {
    /// Whether this identity may use `tenant` / `database` (`None`: any database).
    pub fn check(&self, tenant: &str, database: Option<&str>) -> Result<(), ApiError> {
        let Some(g) = &self.grant else { return Ok(()) };
        let db_ok = match database {
            None => true,
            Some(d) => g.databases.is_empty() || g.databases.iter().any(|x| x == d),
        };
        if g.tenant == tenant && db_ok {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token may not access tenant {tenant:?}{}",
                database.map_or(String::new(), |d| format!(", database {d:?}"))
            )))
        }
    }
}

/// Compares without an early exit, so response times do not reveal how much of a
/// guessed token was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= (x ^ y) as usize;
    }
    diff == 0
}

/// Finds the grant of the token in `Authorization: Bearer …` or `X-Chroma-Token`.
pub fn authenticate(
    tokens: &[TokenGrant],
    authorization: Option<&str>,
    chroma_token: Option<&str>,
) -> Result<Identity, ApiError> {
    if tokens.is_empty() {
        return Ok(Identity {
            user_id: String::new(),
            grant: None,
        });
    }
    let presented = chroma_token
        .or_else(|| authorization.and_then(|a| a.strip_prefix("Bearer ")))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::unauthenticated(
            "no token: send Authorization: Bearer <token> or X-Chroma-Token",
        ));
    };
    let mut found = None;
    for g in tokens {
        // Every token is compared, so timing does not reveal which matched.
        if constant_time_eq(g.token.as_bytes(), presented.as_bytes()) {
            found = Some(g);
        }
    }
    match found {
        Some(g) => Ok(Identity {
            user_id: if g.user_id.is_empty() {
                g.tenant.clone()
            } else {
                g.user_id.clone()
            },
            grant: Some(g.clone()),
        }),
        None => Err(ApiError::unauthenticated("the token is not valid")),
    }
}

/// Buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 10_000;

/// Token buckets, one per key (a token, or a client address without auth).
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request's token from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut b = self.buckets.lock();
        if b.len() >= MAX_BUCKETS {
            // Buckets that have refilled hold nothing worth keeping; without this,
            // clients at new addresses could grow the map without bound.
            let (rate, burst) = (self.rate, self.burst);
            b.retain(|_, (t, last)| *t + now.duration_since(*last).as_secs_f64() * rate < burst);
        }
        let (tokens, last) = b.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.rate;
            Err(ApiError::rate_limited(format!(
                "rate limit of {} requests/s exceeded; retry in {:.0} ms",
                self.rate,
                wait * 1e3
            )))
        }
    }
}

/// Request counts and latencies by route, for `/metrics`.
/// (method, route, status) → (requests, seconds).
type RouteStats = HashMap<(String, String, u16), (u64, f64)>;

#[derive(Default)]
pub struct Metrics {
    routes: Mutex<RouteStats>,
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut m = self.routes.lock();
        let e = m
            .entry((method.to_string(), route.to_string(), status))
            .or_insert((0, 0.0));
        e.0 += 1;
        e.1 += seconds;
    }

    /// Prometheus text format.
    pub fn render(&self, extra: &[(String, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP indigo_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE indigo_requests_total counter\n");
        let m = self.routes.lock();
        let mut rows: Vec<_> = m.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for ((method, route, status), (n, _)) in &rows {
            out.push_str(&format!(
                "indigo_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP indigo_request_seconds_sum Time spent answering, by route.\n");
        out.push_str("# TYPE indigo_request_seconds_sum counter\n");
        for ((method, route, status), (_, secs)) in &rows {
            out.push_str(&format!(
                "indigo_request_seconds_sum{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {secs}\n"
            ));
        }
        for (name, v) in extra {
            out.push_str(&format!("# TYPE {name} gauge\n{name} {v}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_buckets() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        let grants = vec![TokenGrant {
            token: "s3cret".into(),
            tenant: "acme".into(),
            databases: vec!["prod".into()],
            user_id: String::new(),
            admin: false,
        }];
        assert_eq!(authenticate(&grants, None, None).unwrap_err().status, 401);
        assert_eq!(
            authenticate(&grants, Some("Bearer nope"), None)
                .unwrap_err()
                .status,
            401
        );
        let id = authenticate(&grants, Some("Bearer s3cret"), None).unwrap();
        assert!(id.check("acme", Some("prod")).is_ok());
        assert_eq!(id.check("acme", Some("dev")).unwrap_err().status, 403);
        assert_eq!(id.check("other", None).unwrap_err().status, 403);
        assert!(authenticate(&grants, None, Some("s3cret")).is_ok());
        let rl = RateLimiter::new(1.0, 2.0);
        assert!(rl.check("a").is_ok());
        assert!(rl.check("a").is_ok());
        assert_eq!(rl.check("a").unwrap_err().status, 429);
        assert!(rl.check("b").is_ok());
    }
}
