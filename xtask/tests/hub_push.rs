//! `publish --push` against a local server that plays the hub: the request sequence
//! (create the repository, preupload, LFS batch + upload + verify, commit) and what each carries.
//! The real hub cannot be reached from the machines this runs on; the endpoints and bodies are
//! those `huggingface_hub` (create_repo, upload_folder) uses, listed in xtask/src/hub.rs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod common;

use common::{scratch, train_tiny, xtask_env as xtask};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    auth: Option<String>,
    body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 server that records every request and answers like the hub.
fn fake_hub() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (log, url) = (seen.clone(), base.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (log, url) = (log.clone(), url.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let (method, path) = (
                        parts.next().unwrap_or("").to_string(),
                        parts.next().unwrap_or("").to_string(),
                    );
                    let (mut len, mut auth) = (0usize, None);
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap(),
                            "authorization" => auth = Some(v.trim().to_string()),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let answer = match (method.as_str(), path.as_str()) {
                        ("POST", "/api/repos/create") => json!({"url": format!("{url}/me/tuned")}),
                        ("POST", "/api/models/me/tuned/preupload/main") => {
                            let req: Value = serde_json::from_slice(&body).unwrap();
                            let files: Vec<Value> = req["files"].as_array().unwrap().iter().map(|f| {
                                let p = f["path"].as_str().unwrap();
                                let lfs = p.ends_with(".safetensors") || p.ends_with(".png");
                                json!({"path": p, "uploadMode": if lfs {"lfs"} else {"regular"}, "shouldIgnore": false})
                            }).collect();
                            json!({"files": files})
                        }
                        ("POST", "/me/tuned.git/info/lfs/objects/batch") => {
                            let req: Value = serde_json::from_slice(&body).unwrap();
                            let o = &req["objects"][0];
                            json!({"transfer": "basic", "objects": [{
                                "oid": o["oid"], "size": o["size"],
                                "actions": {
                                    "upload": {"href": format!("{url}/lfs/{}", o["oid"].as_str().unwrap()), "header": {"x-amz-test": "1"}},
                                    "verify": {"href": format!("{url}/lfs-verify")},
                                },
                            }]})
                        }
                        ("POST", "/api/models/me/tuned/commit/main") => {
                            json!({"commitUrl": format!("{url}/me/tuned/commit/0123abcd"), "commitOid": "0123abcd"})
                        }
                        _ => json!({}),
                    };
                    log.lock().unwrap().push(Seen {
                        method,
                        path,
                        auth,
                        body,
                    });
                    let text = answer.to_string();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        text.len()
                    );
                    if out
                        .write_all(head.as_bytes())
                        .and_then(|_| out.write_all(text.as_bytes()))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (base, seen)
}

#[test]
fn push_follows_the_hub_upload_sequence() {
    let dir = scratch("push");
    let run = train_tiny(&dir, "r", 2, &[]);
    let folder = dir.join("pub");

    // Without HF_TOKEN: one error before anything is written.
    let out = xtask(
        &[
            "publish",
            "--run",
            run.to_str().unwrap(),
            "--out",
            folder.to_str().unwrap(),
            "--push",
            "me/tuned",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HF_TOKEN is not set"));
    assert!(!folder.exists());

    let (endpoint, seen) = fake_hub();
    let out = xtask(
        &[
            "publish",
            "--run",
            run.to_str().unwrap(),
            "--out",
            folder.to_str().unwrap(),
            "--push",
            "me/tuned",
        ],
        &[("HF_TOKEN", "hf_test"), ("HF_ENDPOINT", &endpoint)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().nth(1),
        Some(format!("{endpoint}/me/tuned/commit/0123abcd").as_str())
    );

    let seen = seen.lock().unwrap().clone();
    let calls: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    let adapter = std::fs::read(folder.join("adapter_model.safetensors")).unwrap();
    let plot = std::fs::read(folder.join("loss.png")).unwrap();
    let oid = |b: &[u8]| {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    let expected: Vec<(String, String)> = [
        ("POST", "/api/repos/create".to_string()),
        ("POST", "/api/models/me/tuned/preupload/main".to_string()),
        ("POST", "/me/tuned.git/info/lfs/objects/batch".to_string()),
        ("PUT", format!("/lfs/{}", oid(&adapter))),
        ("POST", "/lfs-verify".to_string()),
        ("POST", "/me/tuned.git/info/lfs/objects/batch".to_string()),
        ("PUT", format!("/lfs/{}", oid(&plot))),
        ("POST", "/lfs-verify".to_string()),
        ("POST", "/api/models/me/tuned/commit/main".to_string()),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p))
    .collect();
    assert_eq!(calls, expected);
    for s in &seen {
        if s.method == "POST" {
            assert_eq!(s.auth.as_deref(), Some("Bearer hf_test"), "{}", s.path);
        }
    }
    let create: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        create,
        json!({"name": "tuned", "organization": "me", "type": "model", "private": false})
    );
    assert_eq!(
        seen[3].body, adapter,
        "the LFS upload carries the file's bytes"
    );
    // The commit: a header, then every file of the folder, LFS ones by oid.
    let lines: Vec<Value> = String::from_utf8(seen[8].body.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["key"], "header");
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let committed: Vec<String> = lines[1..]
        .iter()
        .map(|l| l["value"]["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(committed, names);
    let b64 = base64::engine::general_purpose::STANDARD;
    for l in &lines[1..] {
        let path = l["value"]["path"].as_str().unwrap();
        let bytes = std::fs::read(folder.join(path)).unwrap();
        if l["key"] == "lfsFile" {
            assert_eq!(l["value"]["oid"], oid(&bytes));
            assert_eq!(l["value"]["size"], bytes.len());
        } else {
            assert_eq!(l["key"], "file");
            assert_eq!(
                b64.decode(l["value"]["content"].as_str().unwrap()).unwrap(),
                bytes,
                "{path}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
