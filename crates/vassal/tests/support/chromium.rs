//! Headless Chromium (Debian's `chromium`, installed by scripts/setup) for the tests that look
//! at a page as a person would (shared by `roles.rs` and `cluster_ui.rs` through `#[path]`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `target/artifacts/`, where screenshots are kept for a person to look at.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `--dump-dom` of `url` and a screenshot of a `width`×`height` window saved as
/// `target/artifacts/<shot>.png`: after its scripts ran for `budget_ms` of virtual time, or,
/// with `None`, as soon as the page has loaded. (A virtual-time budget never runs out while a
/// request is open, so a page holding an event stream must be taken at load.)
pub fn chromium_sized(
    url: &str,
    shot: &str,
    width: u32,
    height: u32,
    budget_ms: Option<u32>,
) -> String {
    let bin = Path::new("/usr/bin/chromium");
    assert!(
        bin.exists(),
        "{} not found: run scripts/setup (it installs Debian's chromium)",
        bin.display()
    );
    let png = artifacts().join(format!("{shot}.png"));
    let _ = std::fs::remove_file(&png);
    let profile = tempfile::tempdir().unwrap();
    let common = |extra: &[String]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(ms) = budget_ms {
            a.push(format!("--virtual-time-budget={ms}"));
        }
        a.push(format!("--user-data-dir={}", profile.path().display()));
        a.extend(extra.iter().cloned());
        a.push(url.to_owned());
        a
    };
    let deadline = Duration::from_secs(90);
    let dom = vassal_testkit::run_with_timeout(bin, &common(&["--dump-dom".into()]), deadline)
        .unwrap_or_else(|e| panic!("chromium --dump-dom {url}: {e}"));
    vassal_testkit::run_with_timeout(
        bin,
        &common(&[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
        ]),
        deadline,
    )
    .unwrap_or_else(|e| panic!("chromium --screenshot {url}: {e}"));
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "{} is {size} bytes", png.display());
    println!("screenshot: {}", png.canonicalize().unwrap().display());
    dom
}

/// [`chromium_sized`] with the window and budget the stats and web pages use.
pub fn chromium(url: &str, shot: &str) -> String {
    chromium_sized(url, shot, 1100, 520, Some(3000))
}
