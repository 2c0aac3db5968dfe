//! User-facing progress: named, timed steps on stderr, and progress bars that
//! draw only on a TTY. Timings are kept for the end-of-run summary and `--json`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// One finished step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepTiming {
    pub name: String,
    pub seconds: f64,
}

/// Records named steps and their durations.
#[derive(Debug, Default)]
pub struct Steps {
    done: Vec<StepTiming>,
    quiet: bool,
}

impl Steps {
    pub fn new(quiet: bool) -> Self {
        Steps {
            done: Vec::new(),
            quiet,
        }
    }

    /// Runs `f` as the step `name`, logging start and duration to stderr.
    pub fn run<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        if !self.quiet {
            eprintln!("==> {name}");
        }
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        if !self.quiet {
            match &out {
                Ok(_) => eprintln!("    {name}: done in {}", fmt_duration(took)),
                Err(_) => eprintln!("    {name}: failed after {}", fmt_duration(took)),
            }
        }
        self.done.push(StepTiming {
            name: name.to_string(),
            seconds: (took.as_secs_f64() * 1000.0).round() / 1000.0,
        });
        out
    }

    /// A line of a step's result, under its timing line.
    pub fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("    {line}");
        }
    }

    pub fn timings(&self) -> &[StepTiming] {
        &self.done
    }

    /// The end-of-run table.
    pub fn print_summary(&self) {
        if self.quiet || self.done.is_empty() {
            return;
        }
        let width = self.done.iter().map(|s| s.name.len()).max().unwrap_or(0);
        eprintln!("step timings:");
        let mut total = 0.0;
        for s in &self.done {
            eprintln!("  {:<width$}  {:>8.2}s", s.name, s.seconds);
            total += s.seconds;
        }
        eprintln!("  {:<width$}  {:>8.2}s", "total", total);
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// A byte-count progress bar for downloads; hidden unless stderr is a TTY.
pub fn bytes_bar(len: Option<u64>, label: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(
        "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}

/// A spinner for long steps with no measurable length; hidden unless stderr is a TTY.
pub fn spinner(label: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if std::io::stderr().is_terminal() {
        bar.enable_steady_tick(Duration::from_millis(200));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_message(label.to_string());
    bar
}
