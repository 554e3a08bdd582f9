//! A tessera built without the PostgreSQL and Redis backends (`--no-default-features`): asked
//! for either, it refuses at start with one sentence naming the missing cargo feature, and the
//! embedded default (SQLite) still works.
//!
//! The build has its own target directory (the running `cargo test` holds the lock of the
//! main one), under this crate's `CARGO_TARGET_TMPDIR`, so it compiles the dependencies once per
//! target directory: the slowest test of the suite on a clean clone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `cargo build -p tessera --no-default-features`, and the binary it made.
fn build_without_backends() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-backends");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--locked",
            "-q",
            "-p",
            "tessera",
            "--no-default-features",
        ])
        .arg("--target-dir")
        .arg(&target)
        // Line tables are enough for a test binary, and link faster.
        .env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")
        .stdout(Stdio::null())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the build without backends failed");
    target
        .join("debug")
        .join(format!("tessera{}", std::env::consts::EXE_SUFFIX))
}

fn run(bin: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_REDIS_URL")
        .env(
            "TESSERA_MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        )
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("tessera runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_backend_not_compiled_in_is_refused_at_start_with_a_clear_sentence() {
    let bin = build_without_backends();
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("features-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pg = [(
        "TESSERA_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )];

    // serve, the CLI's store commands and migrate: exit 2 (bad usage), one sentence, and no
    // server started (the process ends by itself).
    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["user", "list"][..],
        &["migrate"][..],
    ] {
        let out = run(&bin, &dir, args, &pg);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(
                "this tessera was built without PostgreSQL support (cargo feature `postgres`)"
            ),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let redis = [("TESSERA_REDIS_URL", "redis://127.0.0.1:6379")];
    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["user", "list"][..],
    ] {
        let out = run(&bin, &dir, args, &redis);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out)
                .contains("this tessera was built without Redis support (cargo feature `redis`)"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // The embedded default needs neither.
    let out = run(&bin, &dir, &["user", "list", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let _ = std::fs::remove_dir_all(&dir);
}
