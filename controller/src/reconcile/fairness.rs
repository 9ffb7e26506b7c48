//! Fairness between tenants on the shared publish workers (issue 14, point 5), pure: which
//! registry host a run talks to, how many workers one host (and, when configured, one namespace)
//! may hold ([`HostSlots`]: a dead registry holds at most its share, its other runs wait parked
//! without a worker), and the
//! backoff between passes ([`Backoff`]: exponential with jitter, capped; refused credentials
//! retried a bounded number of times).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// The registry host (`host[:port]`, lowercased) of a repository `host[:port]/path`: what the
/// per-host bound counts. A repository without a `/` is its own host (it fails later, with its
/// reason; here it only needs a bucket).
pub fn registry_host(repository: &str) -> String {
    repository
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// A limit a pass counts against: its registry host (`host:<host>`), or its namespace
/// (`namespace:<ns>`), each with its own limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    pub limit: usize,
}

impl Bucket {
    pub fn host(host: &str, limit: usize) -> Self {
        Bucket {
            name: format!("host:{host}"),
            limit: limit.max(1),
        }
    }

    pub fn namespace(namespace: &str, limit: usize) -> Self {
        Bucket {
            name: format!("namespace:{namespace}"),
            limit: limit.max(1),
        }
    }
}

/// Passes in progress per bucket (registry host, namespace), at most each bucket's limit; a run
/// whose bucket is full is parked there (holding no worker) until a pass of that bucket ends.
#[derive(Debug)]
pub struct HostSlots<K> {
    busy: HashMap<String, usize>,
    parked: HashMap<String, VecDeque<K>>,
}

impl<K> Default for HostSlots<K> {
    fn default() -> Self {
        HostSlots {
            busy: HashMap::new(),
            parked: HashMap::new(),
        }
    }
}

impl<K> HostSlots<K> {
    /// `Some(key)` when a pass for `key` may start now (a slot of each bucket is taken: call
    /// [`HostSlots::release`] with the same buckets when the pass ends); `None` when the key was
    /// parked on the first full bucket.
    pub fn admit(&mut self, buckets: &[Bucket], key: K) -> Option<K> {
        if let Some(full) = buckets.iter().find(|b| self.busy(&b.name) >= b.limit) {
            self.parked
                .entry(full.name.clone())
                .or_default()
                .push_back(key);
            return None;
        }
        for b in buckets {
            *self.busy.entry(b.name.clone()).or_default() += 1;
        }
        Some(key)
    }

    /// A pass in `buckets` ended: their slots are free, and the run parked longest on each (if
    /// any) is returned, to be made ready again (it is admitted, or parked again, from there).
    pub fn release(&mut self, buckets: &[Bucket]) -> Vec<K> {
        let mut ready = Vec::new();
        for b in buckets {
            if let Some(busy) = self.busy.get_mut(&b.name) {
                *busy = busy.saturating_sub(1);
                if *busy == 0 {
                    self.busy.remove(&b.name);
                }
            }
            if let Some(parked) = self.parked.get_mut(&b.name) {
                ready.extend(parked.pop_front());
                if parked.is_empty() {
                    self.parked.remove(&b.name);
                }
            }
        }
        ready
    }

    /// Passes in progress in bucket `name`.
    pub fn busy(&self, name: &str) -> usize {
        self.busy.get(name).copied().unwrap_or(0)
    }

    /// Runs parked, all buckets together.
    pub fn parked(&self) -> usize {
        self.parked.values().map(VecDeque::len).sum()
    }
}

/// How passes are retried: the schedule of waits, and how many times refused credentials are
/// tried before the run fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Cap on any wait.
    pub max: Duration,
    /// Passes that may meet 401/403 before the run fails with `RegistryUnauthorized`.
    pub unauthorized_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(300),
            unauthorized_attempts: 5,
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th consecutive failure (1-based): `initial * 2^(n-1)`
    /// capped at `max`, with equal jitter (half fixed, half random) so the runs of one dead
    /// registry do not come back all at once.
    pub fn delay(&self, failures: u32) -> Duration {
        let full = self.full_delay(failures);
        let half = full / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::random_range(0..=nanos))
    }

    /// The un-jittered wait after the `failures`-th failure.
    fn full_delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// After the `refusals`-th pass refused with 401/403 (1-based): the wait before trying
    /// again, or `None` when the budget is spent and the run fails.
    pub fn after_refusal(&self, refusals: u32) -> Option<Duration> {
        (refusals < self.unauthorized_attempts).then(|| self.delay(refusals))
    }
}

/// A registry answer that says the controller's credentials are missing, wrong or not allowed:
/// 401 or 403. Worth a few tries (a Secret being rotated), not forever.
pub fn is_unauthorized(status: Option<u16>) -> bool {
    matches!(status, Some(401 | 403))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_what_the_bound_counts() {
        assert_eq!(
            registry_host("Registry.Example.com:5000/a/b"),
            "registry.example.com:5000"
        );
        assert_eq!(
            registry_host("127.0.0.1:5000/models/bert"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_host("bare"), "bare");
        assert_eq!(registry_host(""), "");
    }

    #[test]
    fn a_host_at_its_limit_parks_its_runs_and_others_still_start() {
        let dead = [Bucket::host("dead", 2)];
        let live = [Bucket::host("live", 2)];
        let mut slots = HostSlots::default();
        assert_eq!(slots.admit(&dead, 1), Some(1));
        assert_eq!(slots.admit(&dead, 2), Some(2));
        // The dead host is at its limit: its next runs wait without a worker...
        assert_eq!(slots.admit(&dead, 3), None);
        assert_eq!(slots.admit(&dead, 4), None);
        assert_eq!(slots.parked(), 2);
        // ...while another host's runs start at once.
        assert_eq!(slots.admit(&live, 10), Some(10));
        assert_eq!(slots.admit(&live, 11), Some(11));
        assert_eq!(slots.busy("host:dead"), 2);
        // A pass on the dead host ends: the run parked longest there is handed back, in order.
        assert_eq!(slots.release(&dead), vec![3]);
        assert_eq!(slots.admit(&dead, 3), Some(3));
        assert_eq!(
            slots.release(&live),
            Vec::<i32>::new(),
            "nothing parked on live"
        );
        assert_eq!(slots.busy("host:live"), 1);
        assert_eq!(slots.release(&dead), vec![4]);
        assert_eq!(slots.admit(&dead, 4), Some(4));
        assert_eq!(slots.release(&dead), Vec::<i32>::new());
        assert_eq!(slots.parked(), 0);
        assert_eq!(slots.busy("host:dead"), 1);
        // Releasing more than admitted never underflows.
        slots.release(&dead);
        slots.release(&dead);
        assert_eq!(slots.busy("host:dead"), 0);
        assert_eq!(slots.admit(&dead, 5), Some(5));
    }

    #[test]
    fn a_namespace_at_its_limit_waits_whatever_hosts_it_uses() {
        // One tenant spreads its runs over many dead hosts: the namespace bound still holds.
        let mut slots = HostSlots::default();
        let run = |host: &str, ns: &str| [Bucket::host(host, 2), Bucket::namespace(ns, 3)];
        assert_eq!(slots.admit(&run("dead-a", "team-a"), 1), Some(1));
        assert_eq!(slots.admit(&run("dead-b", "team-a"), 2), Some(2));
        assert_eq!(slots.admit(&run("dead-c", "team-a"), 3), Some(3));
        assert_eq!(slots.admit(&run("dead-d", "team-a"), 4), None);
        assert_eq!(slots.busy("host:dead-d"), 0, "a parked run holds no slot");
        // Another tenant on a shared host is not held by team-a's bound.
        assert_eq!(slots.admit(&run("dead-a", "team-b"), 20), Some(20));
        assert_eq!(slots.busy("host:dead-a"), 2);
        // One of team-a's passes ends: its parked run comes back.
        assert_eq!(slots.release(&run("dead-b", "team-a")), vec![4]);
        assert_eq!(slots.admit(&run("dead-d", "team-a"), 4), Some(4));
    }

    #[test]
    fn a_limit_of_zero_still_lets_one_pass_run() {
        let mut slots = HostSlots::default();
        assert_eq!(slots.admit(&[Bucket::host("h", 0)], 1), Some(1));
        assert_eq!(slots.admit(&[Bucket::host("h", 0)], 2), None);
    }

    #[test]
    fn backoff_is_capped_exponential_with_jitter() {
        let b = Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(60),
            unauthorized_attempts: 5,
        };
        for (n, full) in [
            (1, 2),
            (2, 4),
            (3, 8),
            (5, 32),
            (6, 60),
            (40, 60),
            (u32::MAX, 60),
        ] {
            let full = Duration::from_secs(full);
            for _ in 0..50 {
                let d = b.delay(n);
                assert!(d >= full / 2 && d <= full, "failure {n}: {d:?}");
            }
        }
        // Jittered: 50 draws of a 32 s wait are not all the same.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| b.delay(5)).collect();
        assert!(draws.len() > 1, "{draws:?}");
    }

    #[test]
    fn refused_credentials_are_tried_a_bounded_number_of_times() {
        let b = Backoff::default();
        let waits: Vec<_> = (1..=6).map(|n| b.after_refusal(n)).collect();
        assert!(waits[..4].iter().all(Option::is_some), "{waits:?}");
        assert_eq!(waits[4], None, "the 5th refusal fails the run");
        assert_eq!(waits[5], None);
        // Over about half a minute by default: 2 + 4 + 8 + 16 s before jitter.
        let total: Duration = (1..5).map(|n| b.full_delay(n)).sum();
        assert_eq!(total, Duration::from_secs(30));
        let once = Backoff {
            unauthorized_attempts: 1,
            ..Backoff::default()
        };
        assert_eq!(once.after_refusal(1), None);
    }

    #[test]
    fn only_401_and_403_are_refused_credentials() {
        assert!(is_unauthorized(Some(401)));
        assert!(is_unauthorized(Some(403)));
        for other in [None, Some(404), Some(429), Some(500), Some(400)] {
            assert!(!is_unauthorized(other), "{other:?}");
        }
    }
}
