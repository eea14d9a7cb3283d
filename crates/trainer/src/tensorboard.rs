//! TensorBoard event files (`--report-to tensorboard`): the scalars of a run written as
//! TensorFlow's `Event` protocol buffers in TFRecord framing, the format `SummaryWriter`
//! (PyTorch, TensorFlow) writes and `tensorboard --logdir` reads.
//!
//! One file per process, `<run>/tensorboard/events.out.tfevents.<seconds>.<host>`, created at
//! the start of the run and appended to (one `write` per record) as the run goes, so TensorBoard
//! shows it live. A resumed run starts a new file from the resumed step; TensorBoard drops the
//! older file's events from that step on (its `purge_orphaned_data`).
//!
//! Only what scalars need is encoded: `Event { wall_time = 1 (double), step = 2 (int64),
//! file_version = 3 (string), summary = 5 }`, `Summary { value = 1 (repeated) }`,
//! `Summary.Value { tag = 1 (string), simple_value = 2 (float) }`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// CRC-32C (Castagnoli), bitwise-reflected, as TFRecord uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// One `Event` with `wall_time`, `step` and either a file version or scalar values.
pub fn event(
    wall_time: f64,
    step: i64,
    file_version: Option<&str>,
    scalars: &[(&str, f32)],
) -> Vec<u8> {
    let mut e = Vec::new();
    varint(&mut e, 1 << 3 | 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        varint(&mut e, 2 << 3);
        varint(&mut e, step as u64);
    }
    if let Some(v) = file_version {
        bytes_field(&mut e, 3, v.as_bytes());
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            varint(&mut v, 2 << 3 | 5);
            v.extend_from_slice(&value.to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        bytes_field(&mut e, 5, &summary);
    }
    e
}

/// `data` framed as one TFRecord: length, its masked CRC, the data, the data's masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An open event file.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Creates a new event file in `dir` (made if missing) and writes its header event.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            })
            .unwrap_or_else(|| "localhost".into());
        let wall = now();
        let mut name = format!("events.out.tfevents.{}.{host}", wall as u64);
        let mut n = 1;
        while dir.join(&name).exists() {
            n += 1;
            name = format!("events.out.tfevents.{}.{host}.{n}", wall as u64);
        }
        let path = dir.join(name);
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut w = Self { path, file };
        w.write(&event(wall, 0, Some("brain.Event:2"), &[]))?;
        Ok(w)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the scalars of `step`, stamped now.
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f64)]) -> Result<()> {
        let values: Vec<(&str, f32)> = scalars
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|&(t, v)| (t, v as f32))
            .collect();
        if values.is_empty() {
            return Ok(());
        }
        self.write(&event(now(), step as i64, None, &values))
    }

    fn write(&mut self, event: &[u8]) -> Result<()> {
        // One write per record: a crash leaves at most a cut last record, which readers skip.
        self.file
            .write_all(&record(event))
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn the_fixture_file_is_written_byte_for_byte() {
        // tests/fixtures/tensorboard/events.bin was read back with tensorboard's own event
        // reader (scripts/fixtures/tensorboard_events.py), which wrote expected.json.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tensorboard");
        let got = fixture_bytes();
        let want = std::fs::read(dir.join("events.bin")).unwrap();
        assert!(
            got == want,
            "the writer's bytes changed: regenerate and recheck the fixture"
        );
    }

    /// One event of the fixture: wall time, step, file version, scalars.
    type FixtureEvent = (f64, i64, Option<&'static str>, Vec<(&'static str, f32)>);

    /// The events of the fixture: fixed wall times so the bytes are reproducible.
    fn fixture_events() -> Vec<FixtureEvent> {
        let mut events = vec![(1_700_000_000.25, 0, Some("brain.Event:2"), vec![])];
        for step in 1..=3i64 {
            events.push((
                1_700_000_000.0 + step as f64,
                step,
                None,
                vec![
                    ("train/loss", 2.0 / step as f32),
                    ("train/learning_rate", 2e-4 * step as f32),
                    ("train/grad_norm", 0.5 + step as f32),
                    ("train/tokens_per_s", 100.0 * step as f32),
                ],
            ));
        }
        events.push((1_700_000_010.5, 3, None, vec![("eval/loss", 1.25)]));
        events.push((1_700_000_011.0, 300, None, vec![("eval/loss", -0.5)]));
        events
    }

    fn fixture_bytes() -> Vec<u8> {
        fixture_events()
            .iter()
            .flat_map(|(t, step, version, values)| record(&event(*t, *step, *version, values)))
            .collect()
    }

    #[test]
    fn tensorboard_reads_what_we_meant_to_write() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tensorboard/expected.json");
        let read: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let events = read["events"].as_array().unwrap();
        let want = fixture_events();
        assert_eq!(events.len(), want.len());
        for (got, (t, step, version, values)) in events.iter().zip(&want) {
            assert_eq!(got["wall_time"].as_f64().unwrap(), *t);
            assert_eq!(got["step"].as_i64().unwrap(), *step);
            assert_eq!(got["file_version"].as_str().unwrap(), version.unwrap_or(""));
            let got_values: Vec<(String, f32)> = got["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    let tag = v["tag"].as_str().unwrap().to_string();
                    (tag, v["simple_value"].as_f64().unwrap() as f32)
                })
                .collect();
            let want_values: Vec<(String, f32)> =
                values.iter().map(|(t, v)| (t.to_string(), *v)).collect();
            assert_eq!(got_values, want_values);
        }
        // TensorBoard's scalar view: three training points per tag, two validation points.
        let scalars = read["scalars"].as_object().unwrap();
        assert_eq!(scalars["train/loss"].as_array().unwrap().len(), 3);
        assert_eq!(scalars["eval/loss"].as_array().unwrap().len(), 2);
    }

    #[test]
    #[ignore = "writes the fixture; run once, then check it with scripts/fixtures/tensorboard_events.py"]
    fn write_fixture() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tensorboard");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("events.bin"), fixture_bytes()).unwrap();
    }
}
