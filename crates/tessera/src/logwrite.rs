//! Log lines reach stderr from a thread of their own, in batches. A request that logs (every
//! token issued, every sign-in writes an audit line) appends its line to a buffer instead of
//! making a write system call of its own, and a log reader that stalls for a while (a full
//! pipe, a slow journald) stalls that thread, not the requests.
//!
//! A batch is written [`DELAY`] after its first line, in the order the lines were logged;
//! warnings and errors are written at once, with what waits before them. Nothing is dropped:
//! past [`BOUND`] bytes waiting, a thread that logs waits for room, as it waited for each
//! write before. The process writes what waits before it exits, and before a panic's message.

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, Once, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long a batch gathers lines after its first.
const DELAY: Duration = Duration::from_millis(10);
/// Bytes waiting for stderr, at most: about 40,000 audit lines, a second of tokens issued at
/// full speed on one core.
const BOUND: usize = 4 << 20;

/// The lines waiting for stderr.
struct Lines {
    pending: Mutex<Vec<u8>>,
    /// Signalled at a batch's first line (for the writer) and when a batch is taken (for
    /// threads waiting for room).
    changed: Condvar,
    /// Held while a batch is written, so that batches reach the output in the order taken.
    out: Mutex<()>,
    bound: usize,
}

/// The process's lines; the writer thread and the panic hook started once, by [`start`].
static LINES: Lines = Lines::new(BOUND);
static STARTED: Once = Once::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lines {
    const fn new(bound: usize) -> Lines {
        Lines {
            pending: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            out: Mutex::new(()),
            bound,
        }
    }

    /// Appends one line (the formatter hands each event over in one call), after waiting for
    /// room if the reader is that far behind. A line longer than the bound goes into an empty
    /// buffer.
    fn push(&self, line: &[u8]) {
        let mut p = lock(&self.pending);
        while !p.is_empty() && p.len() + line.len() > self.bound {
            p = self.changed.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        let first = p.is_empty();
        p.extend_from_slice(line);
        drop(p);
        // Only the first line of a batch wakes the writer.
        if first {
            self.changed.notify_all();
        }
    }

    /// Writes what is buffered to `out` now; `spare` (empty) takes the buffer's place.
    fn write_to(&self, out: &mut impl Write, spare: &mut Vec<u8>) {
        let _turn = lock(&self.out);
        std::mem::swap(&mut *lock(&self.pending), spare);
        if spare.is_empty() {
            return;
        }
        // Room again for the threads that waited for it.
        self.changed.notify_all();
        // Nowhere to report a failed write to stderr: the lines are lost, as they would be
        // with a write per line.
        let _ = out.write_all(spare);
        let _ = out.flush();
        spare.clear();
    }

    /// The writer thread's loop: waits for a first line, gathers for [`DELAY`], writes.
    fn run(&self) {
        let mut spare = Vec::new();
        loop {
            {
                let mut p = lock(&self.pending);
                while p.is_empty() {
                    p = self.changed.wait(p).unwrap_or_else(PoisonError::into_inner);
                }
            }
            std::thread::sleep(DELAY);
            self.write_to(&mut std::io::stderr().lock(), &mut spare);
            // Keep about one batch's capacity, not a backlog's.
            if spare.capacity() > self.bound / 4 {
                spare = Vec::new();
            }
        }
    }
}

/// The `MakeWriter` of the log's formatter: every line through [`Lines`]; made by [`start`].
#[derive(Clone, Copy)]
pub(crate) struct Batched(&'static Lines);

/// One line's writer; `now` for a warning or an error.
pub(crate) struct LineWriter {
    lines: &'static Lines,
    now: bool,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lines.push(buf);
        if self.now {
            self.lines
                .write_to(&mut std::io::stderr().lock(), &mut Vec::new());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts the writer thread, and makes a panic write what waits before its message. Once, at
/// the first call, before anything is logged.
pub(crate) fn start() -> Batched {
    STARTED.call_once(|| {
        // Without the thread (none could be started) lines wait for flush() at exit.
        let _ = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(|| LINES.run());
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            hook(info);
        }));
    });
    Batched(&LINES)
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            lines: self.0,
            now: false,
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            now: *meta.level() <= Level::WARN,
            ..self.make_writer()
        }
    }
}

/// Writes every line waiting now (the process is about to exit or to print on stderr itself).
pub(crate) fn flush() {
    LINES.write_to(&mut std::io::stderr().lock(), &mut Vec::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_out_in_order_and_a_long_line_goes_into_an_empty_buffer() {
        let lines = Lines::new(10);
        lines.push(b"ab\n");
        lines.push(b"cd\n");
        let mut out = Vec::new();
        let mut spare = Vec::new();
        lines.write_to(&mut out, &mut spare);
        assert_eq!(out, b"ab\ncd\n");
        lines.push(b"longer than ten\n");
        lines.write_to(&mut out, &mut spare);
        assert_eq!(out, b"ab\ncd\nlonger than ten\n");
    }

    #[test]
    fn a_line_past_the_bound_waits_for_room_and_is_not_lost() {
        static SMALL: Lines = Lines::new(8);
        SMALL.push(b"abcdef\n");
        let waiting = std::thread::spawn(|| SMALL.push(b"ghij\n"));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiting.is_finished(), "it did not wait for room");
        let mut out = Vec::new();
        SMALL.write_to(&mut out, &mut Vec::new());
        waiting.join().unwrap();
        SMALL.write_to(&mut out, &mut Vec::new());
        assert_eq!(out, b"abcdef\nghij\n");
    }
}
