//! A checkpoint's chat template is untrusted input: it renders in minijinja's sandbox (no loader,
//! so `include` / `import` / `extends` cannot read files), with bounded loops and nesting; and a
//! `tokenizer_config.json` nested a million deep is one error naming the file, not a stack
//! overflow.

use std::path::{Path, PathBuf};

use llama_tokenizer::{ChatTemplate, Message, TokenizerConfig};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("llama-tokenizer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The error of compiling and rendering `source` (it must fail).
fn template_error(source: &str) -> String {
    let rendered = ChatTemplate::new(source, "<s>", "</s>")
        .and_then(|t| t.render(&[Message::new("user", "hi")], true));
    match rendered {
        Ok(text) => panic!("`{source}` rendered: {text:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn templates_cannot_read_files() {
    // A file the template would read if a loader existed: its text must never come back.
    let dir = scratch("sandbox");
    let secret = dir.join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-CONTENT").unwrap();
    let secret = secret.display().to_string();
    for source in [
        format!("{{% include \"{secret}\" %}}"),
        "{% include \"/etc/passwd\" %}".to_string(),
        "{% include \"../../../../etc/passwd\" %}".to_string(),
        format!("{{% import \"{secret}\" as m %}}{{{{ m }}}}"),
        format!("{{% from \"{secret}\" import x %}}{{{{ x }}}}"),
        format!("{{% extends \"{secret}\" %}}"),
        "{% include ['/etc/passwd', '/etc/hostname'] ignore missing %}x".to_string(),
    ] {
        let rendered = ChatTemplate::new(&source, "<s>", "</s>")
            .and_then(|t| t.render(&[Message::new("user", "hi")], true));
        match rendered {
            // `ignore missing` renders without the file: nothing was read.
            Ok(text) => assert_eq!(text, "x", "{source}"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("template not found"), "{source}: {e}");
                assert!(!e.contains("TOP-SECRET") && !e.contains("root:"), "{e}");
            }
        }
    }
    // Nor through Python-style helpers or attributes.
    for source in [
        "{{ open('/etc/passwd').read() }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ self._TemplateReference__context }}",
    ] {
        let rendered = ChatTemplate::new(source, "<s>", "</s>")
            .and_then(|t| t.render(&[Message::new("user", "hi")], true));
        if let Ok(text) = &rendered {
            assert!(!text.contains("root:"), "{source}: {text}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn templates_have_bounded_loops_and_nesting() {
    let e = template_error("{% for i in range(10000000000) %}{{ i }}{% endfor %}");
    assert!(e.contains("range has too many elements"), "{e}");
    let deep = format!("{{{{ {}1{} }}}}", "(".repeat(100_000), ")".repeat(100_000));
    let e = template_error(&deep);
    assert!(e.contains("recursion"), "{e}");
    let e = template_error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}");
    assert!(e.contains("recursion"), "{e}");
}

#[test]
fn a_config_nested_a_million_deep_is_one_error() {
    let dir = scratch("deep-config");
    let path = dir.join("tokenizer_config.json");
    let n = 1_000_000;
    std::fs::write(
        &path,
        format!("{{\"chat_template\": {}{}}}", "[".repeat(n), "]".repeat(n)),
    )
    .unwrap();
    let e = TokenizerConfig::from_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer_config.json") && e.contains("recursion limit"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
