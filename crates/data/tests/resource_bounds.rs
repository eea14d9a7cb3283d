//! Sizes a file declares never drive allocation: a 100 MB single-line JSONL record is one error
//! naming the line (records are at most `MAX_RECORD_BYTES`) while memory stays bounded, and the
//! next line still reads; JSON nested a million deep (a JSON dataset, a JSONL record) is one
//! error naming the file, not a stack overflow.

use std::io::Write;
use std::path::{Path, PathBuf};

use data::{MAX_RECORD_BYTES, read_file};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("data-bounds-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Peak resident memory of this process, in bytes (`VmHWM`).
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 1024
}

#[test]
fn a_100_mb_line_is_one_error_and_memory_stays_bounded() {
    let dir = scratch("long-line");
    let path = dir.join("train.jsonl");
    let size = 100 << 20;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(f, "{{\"text\": \"first\"}}").unwrap();
        f.write_all(b"{\"text\": \"").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..size >> 20 {
            f.write_all(&chunk).unwrap();
        }
        writeln!(f, "\"}}").unwrap();
        writeln!(f, "{{\"text\": \"third\"}}").unwrap();
    }
    let before = peak_rss();
    let records: Vec<_> = read_file(&path).unwrap().collect();
    let grew = peak_rss().saturating_sub(before);
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].as_ref().unwrap().fields["text"], "first");
    let err = records[1].as_ref().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:2: ", path.display()))
            && err.contains("maximum record size")
            && err.contains("16 MiB"),
        "{err}"
    );
    // The reader skipped the rest of the long line and goes on.
    assert_eq!(records[2].as_ref().unwrap().fields["text"], "third");
    // At most the record limit (its buffer may have doubled once) was held, not the 100 MB line
    // (reading it whole and parsing it would take more than 200 MB).
    assert!(
        grew <= 2 * MAX_RECORD_BYTES + (4 << 20),
        "peak memory grew by {} MiB",
        grew >> 20
    );
    eprintln!(
        "100 MiB line: peak RSS grew by {:.1} MiB",
        grew as f64 / (1 << 20) as f64
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_nested_a_million_deep_is_one_error() {
    let dir = scratch("deep");
    let n = 1_000_000;
    let deep = format!("{{\"text\": {}1{}}}", "[".repeat(n), "]".repeat(n));
    for (name, text) in [
        ("deep.jsonl", deep.clone()),
        ("deep.json", format!("[{deep}]")),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let errors: Vec<String> = match read_file(&path) {
            Ok(records) => records
                .filter_map(|r| r.err())
                .map(|e| e.to_string())
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("{}:1", path.display()))
                && errors[0].contains("recursion limit exceeded"),
            "{}",
            errors[0]
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
