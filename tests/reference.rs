//! The manual's reference pages are what the binary generates, so they cannot drift from
//! the configuration struct and the command line; the man pages and completions generate.

mod common;

use common::BIN;
use std::path::Path;
use std::process::Command;

fn generate(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("CHATVAULT_CONFIG")
        .output()
        .expect("run chatvault")
}

#[test]
fn the_checked_in_reference_pages_are_what_the_binary_generates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = generate(&["reference", "--out", dir.path().to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/reference");
    for page in ["config.md", "cli.md"] {
        let generated = std::fs::read_to_string(dir.path().join(page)).expect("generated page");
        let current = std::fs::read_to_string(checked_in.join(page)).unwrap_or_default();
        assert!(
            generated == current,
            "docs/src/reference/{page} differs from what the binary generates: run \
             `cargo run -p chatvault -- reference --out docs/src/reference` and commit the result"
        );
    }
}

#[test]
fn the_environment_does_not_change_the_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain");
    let configured = dir.path().join("configured");
    assert!(
        generate(&["reference", "--out", plain.to_str().expect("utf-8")])
            .status
            .success()
    );
    let out = Command::new(BIN)
        .args(["reference", "--out", configured.to_str().expect("utf-8")])
        .env("CHATVAULT_PAGE_SIZE", "17")
        .env("CHATVAULT_CONFIG", "/nonexistent.toml")
        .output()
        .expect("run chatvault");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in ["config.md", "cli.md"] {
        assert_eq!(
            std::fs::read(plain.join(page)).expect("page"),
            std::fs::read(configured.join(page)).expect("page"),
            "{page}"
        );
    }
}

#[test]
fn man_pages_and_completions_cover_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = generate(&["man-pages", "--out", dir.path().to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "chatvault.1",
        "chatvault-serve.1",
        "chatvault-backup.1",
        "chatvault-hold-place.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    let backup = std::fs::read_to_string(dir.path().join("chatvault-backup.1")).expect("page");
    assert!(backup.contains("manifest"), "{backup}");
    for (shell, expect) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef chatvault"),
        ("fish", "complete -c chatvault"),
    ] {
        let out = generate(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(expect), "{shell}: {script}");
        assert!(script.contains("restore"), "{shell} completes the commands");
    }
}
