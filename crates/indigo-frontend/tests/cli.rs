//! The operator's commands, as a user runs them: an online backup through a
//! running `indigo run` (`indigo backup --url`), `indigo restore` into a new
//! directory served by a second server; a refused start on a lost catalogue and
//! `indigo repair`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const COL: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

fn http(port: u16, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(rest).unwrap_or(Value::Null))
}

fn indigo(args: &[&str], env: &[(&str, &Path)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_indigo"));
    c.args(args).env("INDIGO_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn serve(data: &Path, env: &[(&str, &Path)]) -> (Child, u16) {
    let mut child = indigo(&["run", "--port", "0", "--path"], env)
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, port)
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn online_backup_then_restore_serves_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let (data, backups) = (dir.path().join("data"), dir.path().join("backups"));
    let (mut server, port) = serve(&data, &[("INDIGO_BACKUP_DIR", &backups)]);
    let (_, c) = http(port, "POST", COL, &json!({"name": "docs"}));
    let col = format!("{COL}/{}", c["id"].as_str().unwrap());
    let ids: Vec<String> = (0..500).map(|i| format!("d{i}")).collect();
    let embs: Vec<Vec<f32>> = (0..500).map(|i| vec![i as f32, 1.0, 2.0]).collect();
    assert_eq!(
        http(
            port,
            "POST",
            &format!("{col}/add"),
            &json!({"ids": ids, "embeddings": embs})
        )
        .0,
        201
    );

    let url = format!("http://127.0.0.1:{port}");
    let out = run(&mut indigo(&["backup", "--url", &url, "--name", "b1"], &[]));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up 1 collections"));
    // A name that would escape backup_dir is refused.
    let (s, e) = http(
        port,
        "POST",
        "/api/v2/admin/backup",
        &json!({"name": "../x"}),
    );
    assert_eq!(s, 400, "{e}");
    // The server kept serving, and keeps its data.
    assert_eq!(
        http(port, "GET", &format!("{col}/count"), &Value::Null).1,
        500
    );
    server.kill().unwrap();
    server.wait().unwrap();

    let restored = dir.path().join("restored");
    let out = run(indigo(&["restore", "--from"], &[])
        .arg(backups.join("b1"))
        .arg("--path")
        .arg(&restored));
    assert!(out.status.success());
    let (mut server, port) = serve(&restored, &[]);
    let (s, c) = http(port, "GET", &format!("{COL}/docs"), &Value::Null);
    assert_eq!(s, 200, "{c}");
    let col = format!("{COL}/{}", c["id"].as_str().unwrap());
    assert_eq!(
        http(port, "GET", &format!("{col}/count"), &Value::Null).1,
        500
    );
    let (_, q) = http(
        port,
        "POST",
        &format!("{col}/query"),
        &json!({"query_embeddings": [[42.0, 1.0, 2.0]], "n_results": 1}),
    );
    assert_eq!(q["ids"], json!([["d42"]]));
    server.kill().unwrap();
    server.wait().unwrap();
    // Restoring over existing data is refused.
    let out = run(indigo(&["restore", "--from"], &[])
        .arg(backups.join("b1"))
        .arg("--path")
        .arg(&restored));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn a_lost_catalogue_stops_the_server_and_repair_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, port) = serve(&data, &[]);
    let (_, c) = http(port, "POST", COL, &json!({"name": "kept"}));
    let col = format!("{COL}/{}", c["id"].as_str().unwrap());
    http(
        port,
        "POST",
        &format!("{col}/add"),
        &json!({"ids": ["a", "b"], "embeddings": [[1.0, 2.0], [3.0, 4.0]]}),
    );
    server.kill().unwrap();
    server.wait().unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("sysdb.sqlite3{suffix}")));
    }
    let out = run(indigo(&["run", "--port", "0", "--path"], &[]).arg(&data));

    assert!(
        !out.status.success(),
        "the server must not start over an empty catalogue"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sysdb.sqlite3 is missing") && err.contains("indigo repair"),
        "{err}"
    );
    let out = run(indigo(&["repair", "--path"], &[]).arg(&data));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("restored collection \"kept\""));
    let (mut server, port) = serve(&data, &[]);
    let (s, c) = http(port, "GET", &format!("{COL}/kept"), &Value::Null);
    assert_eq!(s, 200, "{c}");
    let col = format!("{COL}/{}", c["id"].as_str().unwrap());
    assert_eq!(
        http(port, "GET", &format!("{col}/count"), &Value::Null).1,
        2
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `indigo serve` refuses what cannot work before it connects anywhere, and
/// says what to do.
#[test]
fn serve_refuses_a_configuration_that_cannot_work_and_says_why() {
    let cases: [(&[&str], &str); 4] = [
        (&["serve"], "--role"),
        (
            &["serve", "--role", "indexer"],
            "the roles are frontend, log, query, compactor, gc",
        ),
        (&["serve", "--role", "query"], "no catalogue"),
        (
            &[
                "serve",
                "--role",
                "query",
                "--catalogue",
                "host=127.0.0.1",
                "--host",
                "0.0.0.0",
            ],
            "pass --advertise",
        ),
    ];
    for (args, want) in cases {
        let out = run(indigo(args, &[]).env_remove("INDIGO_CATALOGUE"));
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
    }
}
