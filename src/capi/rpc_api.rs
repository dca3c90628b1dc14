//! RPC: the caller's calls (`fork_rpc_*`) and the worker's
//! (`fork_rpc_serve`, `fork_rpc_reply`, `fork_rpc_event`, and
//! `fork_pool_retire` for a pool's worker). Pools are `pool_api.rs`.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use super::boundary;
use super::convert::{UserData, bytes, text};
use super::handle::{fork_proc, take};
use crate::error::{Errno, Error, Result};
use crate::rpc::worker::{self, Worker};
use crate::rpc::{OnEvent, RpcConn};

/// An RPC worker seen from the caller (opaque): made by `fork_rpc_start`,
/// ended by `fork_rpc_free`.
pub struct fork_rpc {
    conn: Arc<RpcConn>,
}

/// The worker's end of an RPC channel (opaque), valid inside
/// `fork_rpc_serve` (and, for an asynchronous worker, until it returns).
pub struct fork_rpc_worker {
    w: *const Worker,
}

/// `fork_rpc_serve` flag: the handler may reply later, from any thread,
/// and requests are handed over without waiting for earlier replies.
pub const FORK_RPC_ASYNC: c_int = 1;

/// The reply to one call: `status` 0 and the reply's `len` bytes at
/// `data` (valid during the callback only), or `status` -errno (data NULL,
/// len 0) when no reply will come: `-EPIPE` the worker exited or died
/// first, `-ECONNRESET` it died (or was killed) with requests it had not
/// read yet, `-EPROTO` it broke the framing; `fork_last_error()` on the
/// dispatching thread says which call and why.
pub type fork_rpc_reply_cb = Option<
    unsafe extern "C" fn(status: c_int, data: *const c_void, len: usize, userdata: *mut c_void),
>;

/// An event the worker sent (`fork_rpc_event`): `len` bytes at `data`,
/// valid during the callback only. Events come in the order sent,
/// interleaved in order with replies.
pub type fork_rpc_event_cb =
    Option<unsafe extern "C" fn(data: *const c_void, len: usize, userdata: *mut c_void)>;

/// Runs once a freed RPC worker or pool has ended. `status` is 0 when
/// the worker saw EOF and exited, or -errno when it had ended otherwise
/// (died, exited on its own); for a pool always 0.
pub type fork_rpc_destroyed_cb = Option<unsafe extern "C" fn(status: c_int, userdata: *mut c_void)>;

/// The worker's handler: one request, `len` bytes at `req` (valid during
/// the call only), with its `id`. Answer with `fork_rpc_reply(w, id, ...)`:
/// a synchronous worker before returning (a request left unanswered gets
/// an empty reply), an asynchronous one whenever it likes, from any thread.
pub type fork_rpc_handler = Option<
    unsafe extern "C" fn(
        w: *mut fork_rpc_worker,
        id: u32,
        req: *const c_void,
        len: usize,
        userdata: *mut c_void,
    ),
>;

pub(super) fn reply_cb(
    name: &'static str,
    cb: fork_rpc_reply_cb,
    ud: UserData,
) -> crate::rpc::Reply {
    Box::new(move |r: Result<Vec<u8>>| {
        let ud = ud;
        let Some(cb) = cb else { return };
        match r {
            // SAFETY: the caller registered `cb` with this signature.
            Ok(d) => unsafe { cb(0, d.as_ptr().cast(), d.len(), ud.0) },
            Err(e) => {
                let errno = boundary::record(&e, name) as c_int;
                // SAFETY: as above.
                unsafe { cb(-errno, std::ptr::null(), 0, ud.0) }
            }
        }
    })
}

pub(super) fn event_cb(cb: fork_rpc_event_cb, ud: UserData) -> Option<OnEvent> {
    let cb = cb?;
    Some(Arc::new(move |d: Vec<u8>| {
        let ud = ud;
        // SAFETY: the caller registered `cb` with this signature.
        unsafe { cb(d.as_ptr().cast(), d.len(), ud.0) }
    }))
}

// SAFETY: userdata is only handed back to the caller's callbacks, which the
// contract allows on any dispatching thread.
unsafe impl Sync for UserData {}

/// Starts an RPC worker: makes `p` enter `function` like `fork_run` (and
/// consumes `p`, even on failure). `function` serves RPC on its comm
/// socket: a C function calling `fork_rpc_serve`, or `anyfork_exec` for a
/// program that speaks the framing (README, "RPC"). Calls may be made at
/// once; they are written as the process becomes reachable. `on_event`
/// (may be NULL) gets the worker's events.
///
/// Returns a handle the caller owns (end it with `fork_rpc_free`), or NULL
/// with `fork_last_error()` set.
///
/// # Safety
/// `p` is NULL or a live handle, never used again; `function` is NULL or
/// a C string; callbacks may run on any thread that dispatches.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_rpc_start(
    p: *mut fork_proc,
    function: *const c_char,
    on_event: fork_rpc_event_cb,
    userdata: *mut c_void,
) -> *mut fork_rpc {
    ffi!(fork_rpc_start, {
        // SAFETY: per the function contract; consumed whatever happens.
        let p = unsafe { take(p)? };
        // SAFETY: per the function contract.
        let name = unsafe { text(function, "the function name")? };
        let conn = RpcConn::start(p, name, event_cb(on_event, UserData(userdata)))?;
        Ok(Box::into_raw(Box::new(fork_rpc { conn })))
    })
}

/// Sends a request of `len` bytes (copied if the socket cannot take it at
/// once; never blocks, the queue is bounded only by memory). `cb` runs
/// exactly once, from dispatch or wait: with the reply, or with -errno if
/// none will come. Outstanding calls count in `fork_pending`.
///
/// Returns 0, or `-EINVAL` (NULL `r` or `cb`, NULL
/// `data` with a length), `-E2BIG` (4 GiB or more), `-EPIPE` (the worker
/// is known to be gone), with `fork_last_error()` set and `cb` never run.
///
/// # Safety
/// `r` is NULL or a live handle; `data` is NULL or points to `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_rpc_call(
    r: *mut fork_rpc,
    data: *const c_void,
    len: usize,
    cb: fork_rpc_reply_cb,
    userdata: *mut c_void,
) -> c_int {
    ffi!(fork_rpc_call, {
        // SAFETY: per the function contract.
        let r = unsafe { r.as_ref() }
            .ok_or_else(|| Error::new(Errno::EINVAL, "the RPC handle is NULL"))?;
        if cb.is_none() {
            return Err(Error::new(Errno::EINVAL, "the reply callback is NULL"));
        }
        // SAFETY: per the function contract.
        let d = unsafe { bytes(data.cast(), len, "data")? };
        r.conn
            .call(d, reply_cb("fork_rpc_call", cb, UserData(userdata)))
            .map(|_| 0)
    })
}

/// Frees an RPC handle gracefully: calls already made are still written
/// and answered, then the worker reads EOF (and exits), then `cb` (may be
/// NULL) runs from dispatch or wait. Until then it counts in
/// `fork_pending`, so `while (fork_wait(-1) > 0) ;` waits for it.
/// `fork_rpc_free(NULL, ...)` does nothing.
///
/// # Safety
/// `r` is NULL or a live handle, never used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_rpc_free(
    r: *mut fork_rpc,
    cb: fork_rpc_destroyed_cb,
    userdata: *mut c_void,
) {
    ffi!(fork_rpc_free, {
        if r.is_null() {
            return Ok(());
        }
        // SAFETY: a live handle, consumed here.
        let r = unsafe { Box::from_raw(r) };
        let ud = UserData(userdata);
        r.conn.free(Some(Box::new(move |why: Option<Error>| {
            let ud = ud;
            let status = why.map_or(0, |e| -(boundary::record(&e, "fork_rpc_free") as c_int));
            if let Some(cb) = cb {
                // SAFETY: the caller registered `cb` with this signature.
                unsafe { cb(status, ud.0) }
            }
        })));
        Ok(())
    })
}

/// In the worker: serves RPC on the comm socket `fd` until the caller
/// closes its side: reads each request and calls `handler` with it.
/// `flags` 0 is synchronous (one request at a time, in order);
/// `FORK_RPC_ASYNC` lets the handler reply later from any thread, and
/// `fork_rpc_serve` then returns only once every request was answered.
/// Once everything read is answered it looks for the next request without
/// blocking for up to 50 µs before it sleeps (as `fork_wait` does for
/// replies; `ANYFORK_SPIN_US` sets the time, 0 turns it off).
///
/// Returns 0 at EOF (return it from the run function), or -errno with
/// `fork_last_error()` set (a bad fd, the caller gone while replying, a
/// request with a reserved id).
///
/// # Safety
/// `handler` is a valid function; `userdata` is passed through untouched.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_rpc_serve(
    fd: c_int,
    handler: fork_rpc_handler,
    userdata: *mut c_void,
    flags: c_int,
) -> c_int {
    ffi!(fork_rpc_serve, {
        let Some(h) = handler else {
            return Err(Error::new(Errno::EINVAL, "the handler is NULL"));
        };
        if flags & !FORK_RPC_ASYNC != 0 {
            return Err(Error::new(
                Errno::EINVAL,
                format!("unknown flags {flags:#x}"),
            ));
        }
        let ud = userdata;
        // One handle for the whole serve: the worker does not move while
        // it serves, and `fork_rpc_serve` returns only when no reply is
        // outstanding.
        let mut handle: Option<Box<fork_rpc_worker>> = None;
        worker::serve(fd, flags & FORK_RPC_ASYNC != 0, |w, id, req| {
            let hp: *mut fork_rpc_worker =
                &mut **handle.get_or_insert_with(|| Box::new(fork_rpc_worker { w }));
            // SAFETY: the user's handler, per the contract.
            unsafe { h(hp, id, req.as_ptr().cast(), req.len(), ud) };
        })
        .map(|()| 0)
    })
}

/// # Safety
/// `w` is NULL or a handle `fork_rpc_serve` gave, while it serves.
unsafe fn worker<'a>(w: *mut fork_rpc_worker) -> Result<&'a Worker> {
    // SAFETY: per the contract above.
    let h = unsafe { w.as_ref() }.ok_or_else(|| Error::new(Errno::EINVAL, "the worker is NULL"))?;
    // SAFETY: the worker outlives every handle given while it serves.
    Ok(unsafe { &*h.w })
}

/// In the worker: answers request `id` with `len` bytes at `data`
/// (copied). Each request is answered once.
///
/// Returns 0, or `-EINVAL` (NULL `w`, an id not waiting for a reply),
/// `-EPIPE` (the caller is gone), with `fork_last_error()` set.
///
/// # Safety
/// `w` is NULL or the handle the handler got, while `fork_rpc_serve`
/// runs; `data` is NULL or points to `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_rpc_reply(
    w: *mut fork_rpc_worker,
    id: u32,
    data: *const c_void,
    len: usize,
) -> c_int {
    ffi!(fork_rpc_reply, {
        // SAFETY: per the function contract.
        let w = unsafe { worker(w)? };
        // SAFETY: per the function contract.
        let d = unsafe { bytes(data.cast(), len, "data")? };
        w.reply(id, d).map(|()| 0)
    })
}

/// In the worker: sends an event (`len` bytes at `data`, copied) to the
/// caller's `on_event`, in order with the replies.
///
/// Returns 0, or -errno with `fork_last_error()` set, as `fork_rpc_reply`.
///
/// # Safety
/// As for `fork_rpc_reply`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_rpc_event(
    w: *mut fork_rpc_worker,
    data: *const c_void,
    len: usize,
) -> c_int {
    ffi!(fork_rpc_event, {
        // SAFETY: per the function contract.
        let w = unsafe { worker(w)? };
        // SAFETY: per the function contract.
        let d = unsafe { bytes(data.cast(), len, "data")? };
        w.event(d).map(|()| 0)
    })
}

/// In a pool's worker: asks to be retired. The pool sends it nothing new;
/// once the requests it has are answered it reads EOF, and the pool
/// starts a replacement as needed.
///
/// Returns 0, or -errno with `fork_last_error()` set.
///
/// # Safety
/// As for `fork_rpc_reply`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_pool_retire(w: *mut fork_rpc_worker) -> c_int {
    ffi!(fork_pool_retire, {
        // SAFETY: per the function contract.
        unsafe { worker(w)? }.retire().map(|()| 0)
    })
}
