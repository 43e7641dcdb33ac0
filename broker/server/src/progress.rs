//! Progress bars of the command-line tools (`indicatif`), drawn on stderr only when stderr is a
//! terminal: scripts and logs get the plain result lines and nothing else.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Whether bars may be drawn.
pub fn enabled() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// A bar over a run of fixed length (`bench`): elapsed against `total`, with a message the
/// caller keeps current. `None` when stderr is not a terminal.
pub fn timed(total: Duration, label: &str) -> Option<ProgressBar> {
    if !enabled() {
        return None;
    }
    let pb = ProgressBar::new(total.as_millis() as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    Some(pb)
}

/// A bar counting work done out of `total` items (`cluster drain --wait`). `None` when stderr
/// is not a terminal.
pub fn counter(total: u64, label: &str) -> Option<ProgressBar> {
    if !enabled() {
        return None;
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    Some(pb)
}
