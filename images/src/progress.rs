//! Progress bars for long work (pulls, imports), drawn only when stderr is a terminal.

use std::io::IsTerminal as _;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A set of progress bars; hidden unless stderr is a terminal (or forced).
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("visible", &self.multi.is_some())
            .finish()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::auto()
    }
}

impl Progress {
    /// Bars on stderr when it is a terminal, none otherwise.
    pub fn auto() -> Self {
        if std::io::stderr().is_terminal() {
            Self {
                multi: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            }
        } else {
            Self::hidden()
        }
    }

    /// No bars.
    pub fn hidden() -> Self {
        Self { multi: None }
    }

    /// A byte-counting bar of `len` bytes labelled `msg`.
    pub fn bytes(&self, len: u64, msg: impl Into<String>) -> ProgressBar {
        let Some(m) = &self.multi else {
            return ProgressBar::hidden();
        };
        let pb = m.add(ProgressBar::new(len));
        let style = ProgressStyle::with_template(
            "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        pb.set_style(style);
        pb.set_message(msg.into());
        pb
    }

    /// A spinner labelled `msg` for work of unknown length.
    pub fn spinner(&self, msg: impl Into<String>) -> ProgressBar {
        let Some(m) = &self.multi else {
            return ProgressBar::hidden();
        };
        let pb = m.add(ProgressBar::new_spinner());
        pb.set_message(msg.into());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    }
}
