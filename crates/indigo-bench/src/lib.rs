//! Shared helpers for Indigo's benchmark programs: data sets, timing, reports.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub mod data;
pub mod fixture;

/// A progress bar on stderr, so figures on stdout stay clean.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// The `q`-quantile (0..=1) of `samples`, sorting them in place.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i]
}

/// Bytes in all files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&p),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Prints a table row: a label, then each column padded.
pub fn row(label: &str, cols: &[String]) {
    print!("| {label:<38} |");
    for c in cols {
        print!(" {c:>16} |");
    }
    println!();
}

pub fn header(label: &str, cols: &[&str]) {
    row(
        label,
        &cols.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    print!("|{}|", "-".repeat(40));
    for _ in cols {
        print!("{}|", "-".repeat(18));
    }
    println!();
}
