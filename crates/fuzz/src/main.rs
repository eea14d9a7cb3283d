//! The AFL++ driver: `fuzz-target TARGET` runs one target of [`fuzz::TARGETS`] in AFL++'s
//! persistent mode. Built by `cargo xtask fuzz` with `cargo afl build --features afl`. Only a
//! panic that escapes the target aborts (a crash for AFL++); one caught inside the target is not.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = fuzz::target(&name) else {
        eprintln!(
            "usage: fuzz-target TARGET (one of {})",
            fuzz::TARGETS.map(|(n, _)| n).join(", ")
        );
        std::process::exit(2);
    };
    // No abort-on-any-panic hook (`fuzz!` installs one): a panic inside a dependency that our
    // reader catches and turns into an error (the Parquet decoder, see
    // crates/data/src/parquet_reader.rs) is handled input, not a crash. A panic that reaches
    // this closure is one: it aborts, which AFL++ records.
    afl::fuzz_nohook!(|data: &[u8]| {
        if std::panic::catch_unwind(|| target(data)).is_err() {
            std::process::abort();
        }
    });
}
