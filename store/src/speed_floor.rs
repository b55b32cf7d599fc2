//! The slowest NAR download nixlet waits for.
//!
//! The HTTP client's read timeout ends a download that stops; it does not end one that trickles
//! (a byte a second from an overloaded or hostile server resets it every time). Such a download
//! never finishes in any useful time, and meanwhile it holds the path's lock, so every later
//! Create of a pod that needs the path waits behind it: the pod never starts and never gets an
//! error. So a download must bring at least `min_bytes_per_sec` on average over each window of
//! the read timeout's length; a slower one fails as a timeout (transient: retried, then
//! reported), within about one window.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeedFloor {
    /// How long a stretch the average is taken over (the read timeout).
    pub window: Duration,
    pub min_bytes_per_sec: u64,
}

/// A download judged too slow.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{bytes} bytes in {:.1} s, below the floor of {min_bytes_per_sec} bytes per second",
    elapsed.as_secs_f64()
)]
pub struct TooSlow {
    pub bytes: u64,
    pub elapsed: Duration,
    pub min_bytes_per_sec: u64,
}

/// The running count of one download.
#[derive(Debug, Clone)]
pub struct SpeedCheck {
    floor: SpeedFloor,
    window_start: Instant,
    window_bytes: u64,
}

impl SpeedCheck {
    pub fn new(floor: SpeedFloor, now: Instant) -> SpeedCheck {
        SpeedCheck {
            floor,
            window_start: now,
            window_bytes: 0,
        }
    }

    /// Counts `bytes` that arrived at `now`. Once a window has passed, its bytes must reach the
    /// floor (over the time really elapsed), and a new window starts.
    pub fn arrived(&mut self, bytes: u64, now: Instant) -> Result<(), TooSlow> {
        self.window_bytes = self.window_bytes.saturating_add(bytes);
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < self.floor.window {
            return Ok(());
        }
        let needed = self.floor.min_bytes_per_sec as f64 * elapsed.as_secs_f64();
        if (self.window_bytes as f64) < needed {
            return Err(TooSlow {
                bytes: self.window_bytes,
                elapsed,
                min_bytes_per_sec: self.floor.min_bytes_per_sec,
            });
        }
        self.window_start = now;
        self.window_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: SpeedFloor = SpeedFloor {
        window: Duration::from_secs(10),
        min_bytes_per_sec: 100,
    };

    #[test]
    fn a_trickle_fails_once_a_window_has_passed() {
        let t0 = Instant::now();
        let mut check = SpeedCheck::new(FLOOR, t0);
        for second in 1..10 {
            assert!(check.arrived(1, t0 + Duration::from_secs(second)).is_ok());
        }
        let slow = check.arrived(1, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(slow.bytes, 10);
        assert_eq!(
            slow.to_string(),
            "10 bytes in 10.0 s, below the floor of 100 bytes per second"
        );
    }

    #[test]
    fn a_download_at_the_floor_goes_on_window_after_window() {
        let t0 = Instant::now();
        let mut check = SpeedCheck::new(FLOOR, t0);
        for second in 1..=60 {
            check
                .arrived(100, t0 + Duration::from_secs(second))
                .unwrap_or_else(|e| panic!("second {second}: {e}"));
        }
    }

    #[test]
    fn a_burst_carries_only_its_own_window() {
        let t0 = Instant::now();
        let mut check = SpeedCheck::new(FLOOR, t0);
        assert!(check
            .arrived(1_000_000, t0 + Duration::from_secs(10))
            .is_ok());
        // The next window starts empty: the burst does not buy a slow tail.
        assert!(check.arrived(1, t0 + Duration::from_secs(20)).is_err());
    }
}
