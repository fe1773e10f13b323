//! Progress display on stderr for long work (indicatif).
//!
//! Shown only for inputs over [`THRESHOLD`] bytes, only when stderr is a
//! terminal, and never with `--quiet`. Where the work is measured in bytes
//! (`apply` writes a known number), a bar with throughput and ETA; where the
//! library does the work in one call (`diff`, `bundle create`), a spinner with
//! the elapsed time and the input size.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Inputs below this many bytes finish too fast to need a progress display.
pub(super) const THRESHOLD: u64 = 4 << 20;

fn target(total: u64) -> Option<ProgressDrawTarget> {
    if super::quiet() || total < THRESHOLD || !std::io::stderr().is_terminal() {
        None
    } else {
        Some(ProgressDrawTarget::stderr())
    }
}

/// A spinner `"{message} [elapsed]"` for work of `total` input bytes; hidden
/// when not wanted.
pub(super) fn spinner(total: u64, message: String) -> ProgressBar {
    let Some(t) = target(total) else {
        return ProgressBar::hidden();
    };
    let pb = ProgressBar::with_draw_target(None, t);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]") {
        pb.set_style(style);
    }
    pb.set_message(message);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A byte bar with throughput and ETA for writing `total` bytes; hidden when
/// not wanted.
pub(super) fn bytes(total: u64, message: String) -> ProgressBar {
    let Some(t) = target(total) else {
        return ProgressBar::hidden();
    };
    let pb = ProgressBar::with_draw_target(Some(total), t);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec}, ETA {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(message);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A writer that advances a progress bar by the bytes written through it.
pub(super) struct Counting<'a, W> {
    pub(super) inner: W,
    pub(super) bar: &'a ProgressBar,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// "12.3 MiB", "512 KiB", "900 bytes".
pub(super) fn size(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} bytes")
    }
}

/// Throughput of `n` bytes in `secs` seconds, "45.1 MiB/s".
pub(super) fn rate(n: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{}/s", size((n as f64 / secs) as u64))
}
