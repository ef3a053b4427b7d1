//! One log line per admission decision: what was decided about which object, never the
//! object itself.
//!
//! With JSON logs the line is written straight into the log sink: the same keys as the
//! `tracing` JSON formatter would give, at a fraction of its cost (it went through a
//! field visitor and a `serde_json` map per event, 2 µs a decision under load). The
//! `ECR_PREFLIGHT_LOG` filter still decides whether the line is written.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use super::Reviewed;
use crate::json::plain_run_bytewise;
use crate::logging::{push_rfc3339_micros, push_zero_padded, LineSink};

/// The log target of decision lines, for `ECR_PREFLIGHT_LOG` directives.
pub const TARGET: &str = "ecr_preflight::decision";

/// Where decision lines go.
#[derive(Clone)]
pub enum DecisionLog {
    /// Through `tracing`, in whatever format its subscriber has.
    Tracing,
    /// As JSON lines straight into the sink.
    Json(LineSink),
}

impl DecisionLog {
    pub fn record(&self, r: &Reviewed, elapsed: Duration) {
        match self {
            DecisionLog::Tracing => log_with_tracing(r, elapsed),
            DecisionLog::Json(sink) => {
                if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
                    thread_local! {
                        static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
                    }
                    LINE.with_borrow_mut(|line| {
                        line.clear();
                        json_line(line, r, SystemTime::now(), elapsed);
                        sink.append(line);
                    });
                }
            }
        }
    }
}

fn problems(r: &Reviewed) -> impl Iterator<Item = &str> {
    r.verdict
        .iter()
        .flat_map(|v| v.problems.iter().map(|p| p.line.as_str()))
}

fn log_with_tracing(r: &Reviewed, elapsed: Duration) {
    let problems: Vec<&str> = problems(r).collect();
    tracing::info!(
        target: TARGET,
        uid = %r.uid,
        kind = %r.kind,
        operation = %r.operation,
        namespace = %r.namespace,
        name = %r.name,
        mode = %r.effective_mode.as_str(),
        decision = %r.disposition().as_str(),
        platforms = r.platform_source,
        images = r.reports.len(),
        problems = ?problems,
        duration_ms = millis(elapsed),
        "admission decision"
    );
}

/// `elapsed` in milliseconds at microsecond resolution, as the JSON line has it: 240,689 ns
/// print as `0.24`, where seconds times 1000 printed `0.24068900000000001`.
fn millis(elapsed: Duration) -> f64 {
    f64::from(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)) / 1000.0
}

/// Writes one JSON line (ending in `\n`) for the decision `r`, made at `now`.
///
/// Bytes are appended directly rather than through `write!`: the formatting machinery was
/// most of the line's cost. `duration_ms` has microsecond resolution.
pub fn json_line(out: &mut Vec<u8>, r: &Reviewed, now: SystemTime, elapsed: Duration) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    push_rfc3339_micros(out, now);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"admission decision\"");
    for (key, value) in [
        ("uid", r.uid.as_str()),
        ("kind", r.kind.as_str()),
        ("operation", r.operation.as_str()),
        ("namespace", r.namespace.as_str()),
        ("name", r.name.as_str()),
        ("mode", r.effective_mode.as_str()),
        ("decision", r.disposition().as_str()),
        ("platforms", r.platform_source),
    ] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        push_json_string(out, value);
    }
    out.extend_from_slice(b",\"images\":");
    out.extend_from_slice(itoa::Buffer::new().format(r.reports.len()).as_bytes());
    out.extend_from_slice(b",\"problems\":[");
    for (i, problem) in problems(r).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_string(out, problem);
    }
    let micros = elapsed.as_micros();
    out.extend_from_slice(b"],\"duration_ms\":");
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    out.push(b'.');
    // Below 1000, so it fits.
    push_zero_padded::<3>(out, (micros % 1000) as u32);
    out.extend_from_slice(b",\"target\":\"");
    out.extend_from_slice(TARGET.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// `s` as a JSON string: copied as is when nothing in it needs escaping (the usual case:
/// the review reader's test for plain string content), else escaped by `serde_json`.
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    if plain_run_bytewise(s.as_bytes()) == s.len() {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_print_milliseconds_without_float_noise() {
        assert_eq!(
            millis(Duration::from_nanos(240_689_999)).to_string(),
            "240.689"
        );
        assert_eq!(
            millis(Duration::from_micros(240_689)).to_string(),
            "240.689"
        );
        assert_eq!(millis(Duration::from_nanos(240_689)).to_string(), "0.24");
        assert_eq!(millis(Duration::from_micros(241)).to_string(), "0.241");
        assert_eq!(millis(Duration::from_micros(1_500)).to_string(), "1.5");
        assert_eq!(millis(Duration::ZERO).to_string(), "0");
    }
}
