//! Uploading a folder to the Hugging Face hub with its HTTP API, the sequence `huggingface_hub`'s
//! `create_repo` + `upload_folder` use:
//!
//! 1. `POST {endpoint}/api/repos/create` `{"name", "organization", "type": "model", "private"}`
//!    (409 = the repository exists: fine);
//! 2. `POST {endpoint}/api/models/{repo}/preupload/main` `{"files": [{"path", "sample", "size"}]}`
//!    answers which files go through LFS (`uploadMode`: `lfs` or `regular`);
//! 3. for LFS files, `POST {endpoint}/{repo}.git/info/lfs/objects/batch` (git-lfs batch API,
//!    `basic` transfer): each object without `actions` is already stored; otherwise `PUT` the
//!    bytes to `actions.upload.href` and `POST {"oid", "size"}` to `actions.verify.href`;
//! 4. `POST {endpoint}/api/models/{repo}/commit/main` with `application/x-ndjson` lines: a
//!    `header` (summary), a `file` per regular file (base64 content), an `lfsFile` per LFS file
//!    (`sha256` oid and size); the answer holds `commitUrl`.
//!
//! Every request carries `Authorization: Bearer $HF_TOKEN`. `HF_ENDPOINT` replaces
//! `https://huggingface.co` (as in `huggingface_hub`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Where and as whom to upload.
pub struct Hub {
    /// `https://huggingface.co` or `HF_ENDPOINT`.
    pub endpoint: String,
    /// `HF_TOKEN`.
    pub token: String,
}

fn describe(e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Status(code, resp) => {
            let url = resp.get_url().to_string();
            let body = resp.into_string().unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            anyhow!("{url}: HTTP {code}: {}", msg.trim())
        }
        other => anyhow!("{other}"),
    }
}

impl Hub {
    /// From `HF_TOKEN` and `HF_ENDPOINT`.
    pub fn from_env() -> Result<Self> {
        let token = std::env::var("HF_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!("--push: HF_TOKEN is not set; create a write token at https://huggingface.co/settings/tokens and export HF_TOKEN")
            })?;
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "https://huggingface.co".into());
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn post(&self, url: &str) -> ureq::Request {
        ureq::post(url).set("authorization", &format!("Bearer {}", self.token))
    }

    /// Uploads every file of `dir` to the model repository `repo` (`USER/NAME`), creating it
    /// when missing, in one commit. Returns the commit's URL.
    pub fn push(&self, dir: &Path, repo: &str, private: bool, summary: &str) -> Result<String> {
        let Some((namespace, name)) = repo
            .split_once('/')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'))
        else {
            bail!("--push {repo}: expected USER/NAME (or ORG/NAME)");
        };
        let e = &self.endpoint;
        match self.post(&format!("{e}/api/repos/create")).send_json(
            json!({"name": name, "organization": namespace, "type": "model", "private": private}),
        ) {
            Ok(_) => {}
            Err(ureq::Error::Status(409, _)) => {}
            Err(err) => return Err(describe(err)).context("creating the repository"),
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| dir.display().to_string())?
            .filter_map(|f| f.ok().map(|f| f.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut entries = Vec::new();
        for path in &files {
            let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            entries.push((name, bytes));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let preupload: Value = self
            .post(&format!("{e}/api/models/{repo}/preupload/main"))
            .send_json(json!({"files": entries.iter().map(|(p, b)| json!({
                "path": p,
                "sample": b64.encode(&b[..b.len().min(512)]),
                "size": b.len(),
            })).collect::<Vec<_>>()}))
            .map_err(describe)
            .context("asking which files go through LFS")?
            .into_json()?;
        let lfs: Vec<String> = preupload["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["uploadMode"] == "lfs")
            .filter_map(|f| f["path"].as_str().map(str::to_string))
            .collect();
        let mut lines =
            vec![json!({"key": "header", "value": {"summary": summary, "description": ""}})];
        for (path, bytes) in &entries {
            if lfs.contains(path) {
                let oid = hex(&Sha256::digest(bytes));
                self.upload_lfs(repo, &oid, bytes)
                    .with_context(|| format!("uploading {path} (LFS)"))?;
                lines.push(json!({"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": bytes.len()}}));
            } else {
                lines.push(json!({"key": "file", "value": {"content": b64.encode(bytes), "path": path, "encoding": "base64"}}));
            }
        }
        let body: String = lines.iter().map(|l| l.to_string() + "\n").collect();
        let commit: Value = self
            .post(&format!("{e}/api/models/{repo}/commit/main"))
            .set("content-type", "application/x-ndjson")
            .send_string(&body)
            .map_err(describe)
            .context("committing the files")?
            .into_json()?;
        Ok(commit["commitUrl"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{e}/{repo}")))
    }

    fn upload_lfs(&self, repo: &str, oid: &str, bytes: &[u8]) -> Result<()> {
        let e = &self.endpoint;
        let batch: Value = self
            .post(&format!("{e}/{repo}.git/info/lfs/objects/batch"))
            .set("accept", "application/vnd.git-lfs+json")
            .set("content-type", "application/vnd.git-lfs+json")
            .send_string(
                &json!({
                    "operation": "upload",
                    "transfers": ["basic"],
                    "objects": [{"oid": oid, "size": bytes.len()}],
                    "hash_algo": "sha256",
                    "ref": {"name": "main"},
                })
                .to_string(),
            )
            .map_err(describe)?
            .into_json()?;
        let object = &batch["objects"][0];
        if let Some(err) = object.get("error") {
            bail!("the LFS server refused {oid}: {err}");
        }
        let Some(actions) = object.get("actions") else {
            return Ok(()); // already stored
        };
        let upload = &actions["upload"];
        let href = upload["href"]
            .as_str()
            .ok_or_else(|| anyhow!("LFS batch answer without an upload href"))?;
        let mut put = ureq::put(href);
        if let Some(headers) = upload["header"].as_object() {
            for (k, v) in headers {
                put = put.set(k, v.as_str().unwrap_or_default());
            }
        }
        put.send_bytes(bytes).map_err(describe)?;
        if let Some(verify) = actions.get("verify") {
            let href = verify["href"]
                .as_str()
                .ok_or_else(|| anyhow!("LFS verify action without an href"))?;
            let mut req = self.post(href);
            if let Some(headers) = verify["header"].as_object() {
                for (k, v) in headers {
                    req = req.set(k, v.as_str().unwrap_or_default());
                }
            }
            req.send_json(json!({"oid": oid, "size": bytes.len()}))
                .map_err(describe)?;
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
