//! Progress callbacks that run Rust closures under librbd: the C trampoline, the
//! `catch_unwind` around the closure, and the panic resumed once librbd has returned. Apart
//! because it is the one place where Rust code is called from C.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use libc::{c_int, c_void};
use librbd_sys as sys;

/// Shared state of one progress-reporting call: the closure and a caught panic.
struct Progress<'a> {
    f: &'a mut (dyn FnMut(u64, u64) -> bool + Send),
    stop: bool,
    panic: Option<Box<dyn Any + Send + 'static>>,
}

/// `librbd_progress_fn_t` trampoline: calls the closure, never unwinds into C.
///
/// librbd calls it from the calling thread (`rbd_copy*`) or from its own worker threads
/// (`rbd_deep_copy*`, per copied object), so the state sits behind a mutex and the
/// closure must be `Send`.
unsafe extern "C" fn progress_trampoline(done: u64, total: u64, data: *mut c_void) -> c_int {
    // SAFETY: data is the `&Mutex<Progress>` passed by run_with_progress; it outlives the
    // whole C call, during which librbd may invoke this from any of its threads.
    let state = unsafe { &*data.cast_const().cast::<Mutex<Progress<'_>>>() };
    // A poisoned lock cannot happen (the closure runs inside catch_unwind); be lenient.
    let mut p = state.lock().unwrap_or_else(|e| e.into_inner());
    if p.stop {
        return -libc::ECANCELED;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| (p.f)(done, total)));
    match outcome {
        Ok(true) => 0,
        Ok(false) => {
            p.stop = true;
            -libc::ECANCELED
        }
        Err(panic) => {
            p.stop = true;
            p.panic = Some(panic);
            -libc::ECANCELED
        }
    }
}

/// Runs `call(cb, cbdata)` with the trampoline; resumes a panic from the closure after the
/// C call has returned.
pub(super) fn run_with_progress(
    f: &mut (dyn FnMut(u64, u64) -> bool + Send),
    call: impl FnOnce(sys::librbd_progress_fn_t, *mut c_void) -> c_int,
) -> c_int {
    let state = Mutex::new(Progress {
        f,
        stop: false,
        panic: None,
    });
    let ret = call(
        Some(progress_trampoline),
        (&state as *const Mutex<Progress<'_>>).cast_mut().cast(),
    );
    let panic = state
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .panic
        .take();
    if let Some(panic) = panic {
        resume_unwind(panic);
    }
    ret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampoline_catches_panic_and_resumes_after_c_returns() {
        let mut calls = 0;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut f = |_d: u64, _t: u64| -> bool {
                calls += 1;
                panic!("boom in progress");
            };
            run_with_progress(&mut f, |cb, data| {
                let cb = cb.unwrap();
                // Stands in for librbd: calls the callback twice, then returns 0.
                // SAFETY: data is the pointer run_with_progress passed in.
                let first = unsafe { cb(1, 10, data) };
                // SAFETY: as above.
                let second = unsafe { cb(2, 10, data) };
                assert_eq!((first, second), (-libc::ECANCELED, -libc::ECANCELED));
                0
            })
        }));
        let panic = result.unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"boom in progress"));
        assert_eq!(calls, 1, "closure must not run again after it panicked");
    }

    #[test]
    fn trampoline_stops_calling_after_false() {
        let mut seen = Vec::new();
        let mut f = |d: u64, _t: u64| {
            seen.push(d);
            d < 2
        };
        let ret = run_with_progress(&mut f, |cb, data| {
            let cb = cb.unwrap();
            let mut rets = Vec::new();
            for d in 1..=4 {
                // SAFETY: data is the pointer run_with_progress passed in.
                rets.push(unsafe { cb(d, 4, data) });
            }
            assert_eq!(
                rets,
                vec![0, -libc::ECANCELED, -libc::ECANCELED, -libc::ECANCELED]
            );
            7
        });
        assert_eq!(ret, 7);
        assert_eq!(seen, vec![1, 2]);
    }
}
