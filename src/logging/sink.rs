//! Where log lines go: a bounded in-memory buffer that one thread writes to stderr in
//! batches.
//!
//! A line costs the request that logs it a short copy under an uncontended lock; there is
//! no system call and no thread wake-up per line. Measured under load (benches/warm_path.sh),
//! a channel to a writer thread woken for every line took 12% of the server's CPU on its
//! own. Lines reach stderr within [`FLUSH_INTERVAL`], or sooner once [`HIGH_WATER`] bytes
//! are waiting; past [`MAX_BUFFERED`] bytes lines are dropped and counted instead of
//! growing memory, and the count is logged when the writer catches up.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Buffered bytes that wake the writer before its interval is up.
pub const HIGH_WATER: usize = 64 * 1024;
/// Buffered bytes beyond which lines are dropped.
pub const MAX_BUFFERED: usize = 8 * 1024 * 1024;

struct State {
    buf: Vec<u8>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes behind: keep using them.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle to append lines; cheap to clone.
#[derive(Clone)]
pub struct LineSink {
    shared: Arc<Shared>,
}

/// Flushes what is buffered and stops the writer thread when dropped.
pub struct SinkGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LineSink {
    /// Starts a writer thread that drains the buffer into `out`.
    pub fn start<W: Write + Send + 'static>(out: W) -> io::Result<(LineSink, SinkGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(HIGH_WATER),
                closed: false,
            }),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_loop(&writer, out))?;
        Ok((
            LineSink {
                shared: shared.clone(),
            },
            SinkGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Appends whole lines (the caller ends them with `\n`). Never blocks on output.
    pub fn append(&self, bytes: &[u8]) {
        let mut state = self.shared.lock();
        if state.closed || state.buf.len() + bytes.len() > MAX_BUFFERED {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = state.buf.len();
        state.buf.extend_from_slice(bytes);
        let crossed = before < HIGH_WATER && state.buf.len() >= HIGH_WATER;
        drop(state);
        if crossed {
            self.shared.wake.notify_one();
        }
    }

    /// Lines dropped so far because the buffer was full.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// An `io::Write` for a logging library that writes each event with one `write_all`.
    pub fn writer(&self) -> SinkWriter {
        SinkWriter { sink: self.clone() }
    }
}

/// See [`LineSink::writer`].
pub struct SinkWriter {
    sink: LineSink,
}

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sink.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_loop<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::with_capacity(HIGH_WATER);
    let mut reported = 0;
    loop {
        let closed = {
            let mut state = shared.lock();
            if !state.closed && state.buf.len() < HIGH_WATER {
                state = shared
                    .wake
                    .wait_timeout(state, FLUSH_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut state.buf, &mut spare);
            state.closed
        };
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped > reported {
            let note = format!(
                "{{\"timestamp\":\"{}\",\"level\":\"WARN\",\"message\":\"log buffer full: lines dropped\",\"dropped\":{},\"target\":\"ecr_preflight::log_sink\"}}\n",
                humantime::format_rfc3339_micros(SystemTime::now()),
                dropped - reported
            );
            spare.extend_from_slice(note.as_bytes());
            reported = dropped;
        }
        if !spare.is_empty() {
            // Nowhere to report a failed write to stderr: the lines are lost.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
            if spare.capacity() > 4 * HIGH_WATER {
                spare.shrink_to(HIGH_WATER);
            }
        }
        if closed {
            return;
        }
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Appends `t` as RFC 3339 in UTC with microseconds, as `humantime` formats it
/// (`2026-11-26T03:01:59.684888Z`). The text up to the seconds changes once a second,
/// so each thread keeps the last one it wrote and formats only the microseconds.
pub fn push_rfc3339_micros(out: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        static LAST: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    LAST.with_borrow_mut(|(last, prefix)| {
        if *last != secs {
            let whole = humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_secs(secs))
                .to_string();
            // Everything before the microseconds: `2026-11-26T03:01:59.`
            *prefix = whole.get(..whole.len() - 7).unwrap_or_default().to_owned();
            *last = secs;
        }
        out.extend_from_slice(prefix.as_bytes());
    });
    push_zero_padded::<6>(out, since.subsec_micros());
    out.push(b'Z');
}

/// Appends the last `WIDTH` decimal digits of `value`, zero-padded: `7` as `000007`.
pub fn push_zero_padded<const WIDTH: usize>(out: &mut Vec<u8>, mut value: u32) {
    let mut digits = [b'0'; WIDTH];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_the_guard_flushes_them() {
        let out = Shared::default();
        let (sink, guard) = LineSink::start(out.clone()).unwrap();
        let mut w = sink.writer();
        for i in 0..1000 {
            writeln!(w, "line {i}").unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[999], "line 999");
        // Closed: further lines are dropped, not buffered.
        sink.append(b"late\n");
        assert_eq!(sink.dropped(), 1);
    }

    #[test]
    fn lines_are_written_within_the_interval_without_a_flush() {
        let out = Shared::default();
        let (sink, _guard) = LineSink::start(out.clone()).unwrap();
        sink.append(b"soon\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*out.0.lock().unwrap(), b"soon\n");
    }

    /// A writer that blocks until released, as a stalled stderr pipe would.
    struct Stalled(Arc<(Mutex<bool>, Condvar)>, Shared);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.0;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.1.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_beyond_the_bound_and_reports_them() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Shared::default();
        let (sink, guard) = LineSink::start(Stalled(gate.clone(), out.clone())).unwrap();
        let line = vec![b'x'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        // The writer may take one batch before stalling; twice the bound must overflow.
        for _ in 0..(2 * MAX_BUFFERED / line.len() + 10) {
            sink.append(&line);
        }
        assert!(sink.dropped() > 0);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.len() <= 2 * MAX_BUFFERED + 4096,
            "{} bytes",
            text.len()
        );
        assert!(
            text.contains("lines dropped"),
            "no report of the dropped lines"
        );
    }

    #[test]
    fn the_cached_timestamp_writer_agrees_with_the_formatter() {
        let start = UNIX_EPOCH + Duration::from_micros(1_795_662_119_684_888);
        // Within one second, across second and day boundaries, and back in time.
        let steps = [0, 1, 315_111, 999_999, 1_000_000, 86_400_000_000, 7, 0];
        for (i, step) in steps.iter().enumerate() {
            let t = start + Duration::from_micros(*step) + Duration::from_micros(i as u64);
            let mut out = Vec::new();
            push_rfc3339_micros(&mut out, t);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_micros(t).to_string()
            );
        }
        let mut out = Vec::new();
        push_rfc3339_micros(&mut out, UNIX_EPOCH);
        assert_eq!(out, b"1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn zero_padded_digits_keep_their_width() {
        for (value, three, six) in [
            (0, "000", "000000"),
            (7, "007", "000007"),
            (999, "999", "000999"),
        ] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            push_zero_padded::<3>(&mut a, value);
            push_zero_padded::<6>(&mut b, value);
            assert_eq!(
                (a.as_slice(), b.as_slice()),
                (three.as_bytes(), six.as_bytes())
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let text = |t: SystemTime| {
            let mut out = Vec::new();
            push_rfc3339_micros(&mut out, t);
            String::from_utf8(out).unwrap()
        };
        let t = UNIX_EPOCH + Duration::from_micros(1_795_662_119_684_888);
        assert_eq!(text(t), "2026-11-26T03:01:59.684888Z");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(text(leap), "2000-02-29T00:00:00.000000Z");
    }
}
