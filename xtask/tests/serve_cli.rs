//! `cargo xtask serve` as a user runs it: the URL on stdout, answers over HTTP, and Ctrl-C
//! (SIGINT) letting the answer under way finish before the process exits 0.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The tiny fixture model with a long context, so that an answer can outlast the SIGINT.
fn long_context_model() -> PathBuf {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/llama-model/tests/fixtures/models/gqa_llama3_tied");
    let to =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-{}", std::process::id()));
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(to.join("config.json")).unwrap()).unwrap();
    config["max_position_embeddings"] = json!(8192);
    std::fs::write(to.join("config.json"), config.to_string()).unwrap();
    to
}

#[cfg(unix)]
#[test]
fn serve_prints_its_url_answers_and_drains_on_ctrl_c() {
    let model = long_context_model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["serve", "--model"])
        .arg(&model)
        .args(["--port", "0", "--name", "tiny"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    stdout.read_line(&mut url).unwrap();
    let url = url.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"),
        "{url:?}"
    );

    let models: Value = ureq::get(&format!("{url}/models"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
    let answer: Value = ureq::post(&format!("{url}/chat/completions"))
        .send_json(json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0}))
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() >= 1);

    // A streamed answer is under way when SIGINT arrives: it still ends with [DONE].
    let stream = ureq::post(&format!("{url}/completions"))
        .send_json(json!({"model": "tiny", "prompt": "go", "max_tokens": 4000, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}))
        .unwrap();
    let mut reader = BufReader::new(stream.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("data: "), "{first:?}");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
    assert!(!rest.contains("\"error\""), "{rest}");
    assert!(
        rest.contains("\"completion_tokens\":4000"),
        "the whole answer was sent: {}",
        &rest[rest.len().saturating_sub(400)..]
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(exit.success(), "exit {exit:?}: {err}");
    let stopping = err
        .find("stopping after the answers under way")
        .expect(&err);
    assert!(err[stopping..].contains("serve: stopped"), "{err}");
    let _ = std::fs::remove_dir_all(&model);
    assert!(
        ureq::get(&format!("{url}/models")).call().is_err(),
        "nothing listens after the exit"
    );
}
