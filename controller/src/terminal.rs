//! What the local subcommands show a person: their output on stdout, which ends quietly when its
//! reader goes away (`provenant crds | head`), and progress bars for long work on a terminal.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Exit code when stdout cannot be written for another reason than a closed pipe.
const EXIT_IO: i32 = 2;

/// Set once stdout's reader has gone away: nothing more is written.
static READER_GONE: AtomicBool = AtomicBool::new(false);

/// Write to stdout. When the reader has gone away (EPIPE: `| head` read what it wanted), the rest
/// of the output is dropped quietly and the command still finishes with its own exit status;
/// any other write error (a full disk behind `>`) ends the process with an error, as output
/// silently lost would be.
pub fn write_stdout(args: std::fmt::Arguments) {
    if READER_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            READER_GONE.store(true, Ordering::Relaxed)
        }
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(EXIT_IO);
        }
    }
}

/// Whether `error` (or an error it wraps) is a closed pipe: the reader of our output went away,
/// which ends a command quietly rather than as a failure.
pub fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// `print!` to stdout through [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::terminal::write_stdout(format_args!($($arg)*)) };
}

/// `println!` to stdout through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => { $crate::terminal::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::terminal::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

const KNOWN_TOTAL: &str = "{msg:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
const UNKNOWN_TOTAL: &str = "{msg:20} {spinner} {bytes} {bytes_per_sec}";

/// A progress bar over bytes on stderr: drawn only when stderr is a terminal and the user did not
/// ask for `--quiet`, so logs and pipes never see it.
#[derive(Clone)]
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar for `what` (e.g. "hashing model"), `total` bytes when known.
    pub fn bytes(what: &str, total: Option<u64>, quiet: bool) -> Self {
        let target = if quiet || !io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(total, target);
        let template = if total.is_some() {
            KNOWN_TOTAL
        } else {
            UNKNOWN_TOTAL
        };
        // The templates are constants: a bad one is a bug caught by the unit test below.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        Progress(bar)
    }

    /// The total became known (after a walk).
    pub fn set_total(&self, bytes: u64) {
        self.0.set_length(bytes);
    }

    /// `bytes` more are done.
    pub fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    /// Done: the bar is removed from the terminal.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Counts hashed bytes into a bar whose total is already set (several files, one bar).
pub struct Counter<'a>(&'a Progress);

impl crate::hashing::HashObserver for Counter<'_> {
    fn hashed(&self, bytes: u64) {
        self.0.advance(bytes);
    }
}

impl Progress {
    /// An observer that only advances this bar.
    pub fn counter(&self) -> Counter<'_> {
        Counter(self)
    }
}

/// A bar follows hashing: its total once the walk is done, then the bytes as they are hashed.
impl crate::hashing::HashObserver for Progress {
    fn walked(&self, _files: usize, bytes: u64) {
        self.set_total(bytes);
    }

    fn hashed(&self, bytes: u64) {
        self.advance(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_styles_parse_and_a_hidden_bar_counts() {
        for template in [KNOWN_TOTAL, UNKNOWN_TOTAL] {
            ProgressStyle::with_template(template).expect("template parses");
        }
        for total in [Some(10), None] {
            let progress = Progress::bytes("hashing", total, true);
            progress.set_total(10);
            progress.advance(4);
            assert_eq!(progress.0.position(), 4);
            progress.finish();
        }
    }

    #[test]
    fn broken_pipes_are_recognized_through_wrappers() {
        let pipe = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&pipe));
        let wrapped = anyhow::Error::new(pipe).context("writing the Secret manifest");
        assert!(is_broken_pipe(wrapped.as_ref()));
        assert!(!is_broken_pipe(&io::Error::from(io::ErrorKind::NotFound)));
    }
}
