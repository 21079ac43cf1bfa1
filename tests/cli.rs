//! The `multifrost` CLI as a user sees it: its output, its exit status and
//! how fast it answers, with the registry in a temporary HOME.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn home(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mf-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(".multifrost")).unwrap();
    dir
}

fn cli(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_multifrost"))
        .args(args)
        .env("HOME", home)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version() {
    let out = cli(&home("version"), &["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("multifrost {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_unknown_or_dead_service_is_reported_at_once() {
    let h = home("unknown");
    // Both messages come from the check made at once; the 5 s discovery
    // wait would end with "not found within 5.0 s".
    let out = cli(&h, &["call", "nosuch", "add", "1", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("service 'nosuch' is not in"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(
        h.join(".multifrost/services.json"),
        format!(
            r#"{{"gone": {{"port": 40001, "pid": {}, "started": "2026-01-01T00:00:00"}}}}"#,
            i32::MAX
        ),
    )
    .unwrap();
    let out = cli(&h, &["--json", "ping", "gone"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["status"], "MF_ERR_NOT_FOUND");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no longer running"),
        "{v}"
    );

    let out = cli(&h, &["--json", "prune"]);
    assert_eq!(text(&out.stdout).trim(), r#"{"removed":["gone"]}"#);
    let out = cli(&h, &["--json", "services"]);
    assert_eq!(text(&out.stdout).trim(), "[]");
}

#[test]
fn a_json_error_points_into_the_argument() {
    let out = cli(
        &home("json"),
        &["call", "svc", "echo", "1", r#"{"a": [1, 2}"#],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("argument 2 is not JSON"), "{err}");
    assert!(err.contains("line 1, column 12"), "{err}");
    assert!(
        err.ends_with("  {\"a\": [1, 2}\n             ^\n"),
        "{err:?}"
    );
    let err = text(&cli(&home("json2"), &["call", "svc", "echo", "hello"]).stderr);
    assert!(err.contains("a string needs JSON quotes"), "{err}");
}

#[test]
fn wrong_usage_exits_2() {
    let h = home("usage");
    assert_eq!(
        cli(&h, &["--timeout", "soon", "services"]).status.code(),
        Some(2)
    );
    assert_eq!(cli(&h, &["call", "svc"]).status.code(), Some(2));
}
