//! What every benchmark prints: a header naming the commit, host and configuration, then
//! figures; with `--json`, one JSON line holding the same figures and the environment.
//!
//! Percentiles always come from an `hdrhistogram::Histogram` recorded in microseconds
//! (never averaged); `Percentiles::from_histogram` is the one place that reads them.

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

/// The environment a figure was measured in.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub commit: &'static str,
    pub host: String,
    pub cores: usize,
    pub kernel: String,
}

impl Environment {
    pub fn current() -> Environment {
        Environment {
            commit: env!("QUASAR_COMMIT"),
            host: read_trimmed("/proc/sys/kernel/hostname"),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub samples: u64,
}

impl Percentiles {
    pub fn from_histogram(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            samples: h.len(),
        }
    }

    /// One human line: `p50 412us  p90 ...`.
    pub fn human(&self) -> String {
        format!(
            "p50 {}us  p90 {}us  p99 {}us  p99.9 {}us  max {}us  ({} samples)",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us, self.samples
        )
    }
}

/// A latency histogram in microseconds from 1 us to 60 s with 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // NOTE: the bounds are constants that hdrhistogram accepts; failure would be a bug here.
    #[expect(clippy::unwrap_used, reason = "constant, valid bounds")]
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// A finished benchmark: its name, its configuration and its figures, printed either for a
/// person or as one JSON line.
pub struct Report {
    pub benchmark: &'static str,
    pub config: Value,
    pub figures: Map<String, Value>,
}

impl Report {
    pub fn new(benchmark: &'static str, config: impl Serialize) -> Report {
        Report {
            benchmark,
            config: serde_json::to_value(config).unwrap_or(Value::Null),
            figures: Map::new(),
        }
    }

    /// Adds one figure (e.g. `entries_per_sec`).
    pub fn figure(&mut self, name: &str, value: impl Serialize) -> &mut Report {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.figures.insert(name.to_owned(), value);
        self
    }

    /// Adds the percentile fields (`p50_us`, `p99_us`, ...) with a prefix (`""` for none).
    pub fn percentiles(&mut self, prefix: &str, p: &Percentiles) -> &mut Report {
        if let Value::Object(map) = serde_json::to_value(p).unwrap_or(Value::Null) {
            for (k, v) in map {
                self.figures.insert(format!("{prefix}{k}"), v);
            }
        }
        self
    }

    /// Prints the report: one JSON line with `json`, else a header and one line per figure.
    pub fn print(&self, json: bool) {
        let env = Environment::current();
        if json {
            let mut out = Map::new();
            out.insert("benchmark".into(), Value::from(self.benchmark));
            out.insert("config".into(), self.config.clone());
            out.insert(
                "env".into(),
                serde_json::to_value(&env).unwrap_or(Value::Null),
            );
            for (k, v) in &self.figures {
                out.insert(k.clone(), v.clone());
            }
            println!("{}", Value::Object(out));
        } else {
            println!(
                "quasar-bench {}  commit {}  host {}  cores {}  kernel {}",
                self.benchmark, env.commit, env.host, env.cores, env.kernel
            );
            println!("config: {}", self.config);
            for (k, v) in &self.figures {
                println!("  {k:<24} {v}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_report_holds_config_env_and_figures() {
        let mut h = latency_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let p = Percentiles::from_histogram(&h);
        assert_eq!(p.samples, 1000);
        assert!(p.p50_us >= 499 && p.p50_us <= 501, "{p:?}");
        let mut r = Report::new("test", serde_json::json!({"groups": 3}));
        r.figure("entries_per_sec", 12.5).percentiles("", &p);
        assert_eq!(r.figures["p99_us"], serde_json::json!(p.p99_us));
        assert_eq!(r.config["groups"], 3);
    }
}
