//! What the nixlet shim says about its own work, read back from containerd's log (which carries
//! the shims' logs): the time its Create spent preparing a container (resolving the
//! environment, fetching what is missing, building the view, rewriting config.json). It splits
//! a pod's start into nixlet's own part and everyone else's.

/// `elapsed_ms` of each "rewrote container spec" line for `environment` (`owner/name`), in log
/// order.
pub fn prepare_ms(containerd_log: &str, environment: &str) -> Vec<f64> {
    let wanted = format!("environment={environment}:");
    containerd_log
        .lines()
        .filter(|l| l.contains("rewrote container spec") && l.contains(&wanted))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|field| field.strip_prefix("elapsed_ms="))
                .and_then(|v| v.trim_end_matches('"').parse().ok())
        })
        .collect()
}

/// The last `n` of `samples`: the measured runs after the warm-up ones.
pub fn last(samples: Vec<f64>, n: usize) -> Vec<f64> {
    let skip = samples.len().saturating_sub(n);
    samples.into_iter().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_prepare_time_of_one_environment() {
        let log = concat!(
            "time=\"t\" level=info msg=\"rewrote container spec environment=bench/m10:1 view=/nix/store/x paths=11 elapsed_ms=5\"\n",
            "time=\"t\" level=info msg=\"rewrote container spec environment=bench/m100:1 view=/nix/store/y paths=101 elapsed_ms=15\"\n",
            "time=\"t\" level=info msg=\"rewrote container spec environment=bench/m10:1 view=/nix/store/x paths=11 elapsed_ms=7\"\n",
        );
        assert_eq!(prepare_ms(log, "bench/m10"), [5.0, 7.0]);
        assert_eq!(last(prepare_ms(log, "bench/m10"), 1), [7.0]);
    }
}
