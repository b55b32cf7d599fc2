//! How many Kubernetes Events failed Creates may become. A crash-looping pod fails the same way
//! every few seconds; the kubelet's own Events already say it backs off. So: one Event per pod
//! and message per [`PER_POD_MESSAGE`], and at most [`GLOBAL_PER_MINUTE`] per node and minute,
//! so that a broken cache on a node full of pods cannot flood the API server.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub const PER_POD_MESSAGE: Duration = Duration::from_secs(10 * 60);
pub const GLOBAL_PER_MINUTE: usize = 20;
const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Post,
    /// The same pod got the same message within [`PER_POD_MESSAGE`].
    Repeated,
    /// The node posted [`GLOBAL_PER_MINUTE`] Events in the last minute.
    OverNodeLimit,
}

pub struct EventRateLimit {
    per_key: Duration,
    per_minute: usize,
    /// (namespace, pod, message) → when it was last posted.
    last: HashMap<(String, String, String), Instant>,
    /// When the Events of the last minute were posted, oldest first.
    recent: VecDeque<Instant>,
}

impl Default for EventRateLimit {
    fn default() -> Self {
        EventRateLimit::new(PER_POD_MESSAGE, GLOBAL_PER_MINUTE)
    }
}

impl EventRateLimit {
    pub fn new(per_key: Duration, per_minute: usize) -> EventRateLimit {
        EventRateLimit {
            per_key,
            per_minute,
            last: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// Decides on one Event and, when it may be posted, counts it.
    pub fn check(&mut self, namespace: &str, pod: &str, message: &str, now: Instant) -> Decision {
        let per_key = self.per_key;
        // Forget what can no longer suppress anything, so the table stays small.
        self.last
            .retain(|_, posted| now.saturating_duration_since(*posted) < per_key);
        while self
            .recent
            .front()
            .is_some_and(|posted| now.saturating_duration_since(*posted) >= MINUTE)
        {
            self.recent.pop_front();
        }
        let key = (namespace.to_string(), pod.to_string(), message.to_string());
        if self.last.contains_key(&key) {
            return Decision::Repeated;
        }
        if self.recent.len() >= self.per_minute {
            return Decision::OverNodeLimit;
        }
        self.last.insert(key, now);
        self.recent.push_back(now);
        Decision::Post
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_pod_and_message_is_posted_once_per_interval() {
        let mut limit = EventRateLimit::new(Duration::from_secs(600), 100);
        let t0 = Instant::now();
        assert_eq!(limit.check("ns", "web", "m1", t0), Decision::Post);
        assert_eq!(
            limit.check("ns", "web", "m1", t0 + Duration::from_secs(599)),
            Decision::Repeated
        );
        // Another message, or another pod, is news.
        assert_eq!(limit.check("ns", "web", "m2", t0), Decision::Post);
        assert_eq!(limit.check("ns", "db", "m1", t0), Decision::Post);
        assert_eq!(limit.check("other", "web", "m1", t0), Decision::Post);
        assert_eq!(
            limit.check("ns", "web", "m1", t0 + Duration::from_secs(600)),
            Decision::Post
        );
    }

    #[test]
    fn the_node_posts_at_most_the_cap_per_minute() {
        let mut limit = EventRateLimit::new(Duration::from_secs(600), 3);
        let t0 = Instant::now();
        for pod in ["a", "b", "c"] {
            assert_eq!(limit.check("ns", pod, "m", t0), Decision::Post);
        }
        assert_eq!(
            limit.check("ns", "d", "m", t0 + Duration::from_secs(59)),
            Decision::OverNodeLimit
        );
        // A suppressed Event is not remembered: it may go out once the minute has passed.
        assert_eq!(
            limit.check("ns", "d", "m", t0 + Duration::from_secs(60)),
            Decision::Post
        );
    }
}
