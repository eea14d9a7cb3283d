//! The AFL++ driver: `fuzz-target TARGET` runs one target of [`fuzz::TARGETS`] in AFL++'s
//! persistent mode. Built by `cargo xtask fuzz` with `cargo afl build --features afl`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = fuzz::target(&name) else {
        eprintln!(
            "usage: fuzz-target TARGET (one of {})",
            fuzz::TARGETS.map(|(n, _)| n).join(", ")
        );
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        target(data);
    });
}
