//! Out-of-memory on the accelerator: burn-cuda (cubecl) panics when an allocation or a kernel
//! launch runs out of device memory. A run turns that panic into one error that names the batch
//! and sequence sizes and what to change, instead of a backtrace.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// Whether a panic message is the device running out of memory: cubecl's allocation error
/// (`can't allocate buffer of size`), its launch error (`out-of-memory error happened during
/// launch`), or the CUDA driver's code.
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("can't allocate buffer of size")
        || m.contains("out-of-memory")
        || m.contains("out of memory")
        || m.contains("cuda_error_out_of_memory")
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(panic without a message)")
    }
}

/// Runs `f`; an out-of-memory panic becomes `Err(describe(first line of the message))`, any
/// other panic goes on unwinding.
pub fn catch_out_of_memory<T>(
    f: impl FnOnce() -> T,
    describe: impl FnOnce(&str) -> String,
) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            if is_out_of_memory(&message) {
                let first = message.lines().next().unwrap_or_default().trim();
                Err(describe(first))
            } else {
                resume_unwind(payload)
            }
        }
    }
}

/// A panic hook that stays silent for out-of-memory panics (the run reports them as an error)
/// and hands every other panic to the hook that was installed before. For programs (the CLI);
/// a library leaves the hook alone.
pub fn install_quiet_oom_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_out_of_memory(&panic_message(info.payload())) {
            previous(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_cubecl_and_driver_messages() {
        // The texts of cubecl 0.10's `IoError::BufferTooBig` and `LaunchError::OutOfMemory`,
        // and cudarc's driver error.
        assert!(is_out_of_memory(
            "can't allocate buffer of size: 68719476736\n<backtrace>"
        ));
        assert!(is_out_of_memory(
            "An out-of-memory error happened during launch\nCaused by:\n  x"
        ));
        assert!(is_out_of_memory(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"
        ));
        assert!(!is_out_of_memory(
            "index out of bounds: the len is 3 but the index is 7"
        ));
    }

    #[test]
    fn out_of_memory_panic_becomes_an_error() {
        let r: Result<(), String> = catch_out_of_memory(
            || {
                std::panic::panic_any(String::from(
                    "can't allocate buffer of size: 1024\nbacktrace",
                ))
            },
            |first| format!("step 3: {first}"),
        );
        assert_eq!(r, Err("step 3: can't allocate buffer of size: 1024".into()));
        assert_eq!(catch_out_of_memory(|| 7, |_| String::new()), Ok(7));
    }

    #[test]
    fn other_panics_keep_unwinding() {
        let outer = catch_unwind(|| {
            catch_out_of_memory(|| panic!("index out of bounds"), |_| String::new())
        });
        assert!(outer.is_err());
    }
}
