//! Pools of RPC workers, the caller's calls: `fork_pool_defaults`,
//! `fork_pool_new`, `fork_pool_add_template`, `fork_pool_call`,
//! `fork_pool_workers`, `fork_pool_free` (a worker's `fork_pool_retire`
//! is in `rpc_api.rs`).

use std::ffi::{c_char, c_double, c_int, c_uint, c_void};
use std::time::Duration;

use super::convert::{UserData, bytes, text};
use super::handle::{fork_proc, take};
use super::rpc_api::{
    event_cb, fork_rpc_destroyed_cb, fork_rpc_event_cb, fork_rpc_reply_cb, reply_cb,
};
use crate::error::{Errno, Error, Result};
use crate::rpc::{Pool, PoolOpts};

/// A pool of RPC workers (opaque): made by `fork_pool_new`, ended by
/// `fork_pool_free`.
pub struct fork_pool {
    pool: Pool,
}

/// A pool's settings, with AnyEvent::Fork::Pool's meanings; start from
/// `fork_pool_defaults()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct fork_pool_opts {
    /// Workers at most (default: the number of CPUs).
    pub max: c_uint,
    /// Idle workers kept ready, started at once (default 0).
    pub idle: c_uint,
    /// Requests in flight per worker at most (default 2).
    pub load: c_uint,
    /// Seconds between starting workers while all are busy (default 0.1).
    pub start: c_double,
    /// Seconds a spare worker stays idle before it is stopped (default 10).
    pub stop: c_double,
    /// Retire a worker after this many requests (default 0: never).
    pub retire_after: u64,
}

/// The default pool settings: max = number of CPUs, idle 0, load 2,
/// start 0.1 s, stop 10 s, retire_after 0.
#[unsafe(no_mangle)]
pub extern "C" fn fork_pool_defaults() -> fork_pool_opts {
    ffi!(fork_pool_defaults, on_error = to_c(&PoolOpts::default()), {
        Ok(to_c(&PoolOpts::default()))
    })
}

fn to_c(o: &PoolOpts) -> fork_pool_opts {
    fork_pool_opts {
        max: o.max.min(c_uint::MAX as usize) as c_uint,
        idle: o.idle as c_uint,
        load: o.load as c_uint,
        start: o.start.as_secs_f64(),
        stop: o.stop.as_secs_f64(),
        retire_after: o.retire_after,
    }
}

fn seconds(v: c_double, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(v).map_err(|_| {
        Error::new(
            Errno::EINVAL,
            format!("{what} ({v}) is not a number of seconds >= 0"),
        )
    })
}

/// Makes a pool: workers are forked from `template` (consumed, even on
/// failure; it is the pool's now) and enter `function`, which serves RPC
/// (see `fork_rpc_start`). `opts` NULL means `fork_pool_defaults()`.
/// `opts->idle` workers start at once. `on_event` (may be NULL) gets every
/// worker's events.
///
/// Returns a handle (end it with `fork_pool_free`), or NULL with
/// `fork_last_error()` set (`-EINVAL`: max or load 0, idle > max, a
/// negative or NaN time).
///
/// # Safety
/// `template` is NULL or a live handle, never used again; `function` is
/// NULL or a C string; `opts` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_pool_new(
    template: *mut fork_proc,
    function: *const c_char,
    opts: *const fork_pool_opts,
    on_event: fork_rpc_event_cb,
    userdata: *mut c_void,
) -> *mut fork_pool {
    ffi!(fork_pool_new, {
        // SAFETY: per the function contract; consumed whatever happens.
        let t = unsafe { take(template)? };
        // SAFETY: per the function contract.
        let name = unsafe { text(function, "the function name")? };
        // SAFETY: per the function contract.
        let o = unsafe { opts.as_ref() }
            .copied()
            .unwrap_or_else(|| to_c(&PoolOpts::default()));
        let opts = PoolOpts {
            max: o.max as usize,
            idle: o.idle as usize,
            load: o.load as usize,
            start: seconds(o.start, "start")?,
            stop: seconds(o.stop, "stop")?,
            retire_after: o.retire_after,
        };
        let pool = Pool::new(t, name, opts, event_cb(on_event, UserData(userdata)))?;
        Ok(Box::into_raw(Box::new(fork_pool { pool })))
    })
}

/// Adds another template workers may be forked from (templates are used
/// in turn); consumes `template`, even on failure.
///
/// Returns 0, or -errno with `fork_last_error()` set.
///
/// # Safety
/// `pool` is NULL or a live handle; `template` as for `fork_pool_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_pool_add_template(
    pool: *mut fork_pool,
    template: *mut fork_proc,
) -> c_int {
    ffi!(fork_pool_add_template, {
        // SAFETY: per the function contract.
        let t = unsafe { take(template)? };
        // SAFETY: per the function contract.
        let pool = unsafe { pool.as_ref() }
            .ok_or_else(|| Error::new(Errno::EINVAL, "the pool is NULL"))?;
        pool.pool.add_template(t).map(|()| 0)
    })
}

/// Sends a request to the least-loaded worker, or queues it while every
/// worker is at its load (never blocks). `cb` runs exactly once, as for
/// `fork_rpc_call`; a worker that dies fails only its own calls.
///
/// Returns 0, or `-EINVAL`, `-E2BIG`, `-EPIPE` (freed) with
/// `fork_last_error()` set and `cb` never run.
///
/// # Safety
/// `pool` is NULL or a live handle; `data` is NULL or points to `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_pool_call(
    pool: *mut fork_pool,
    data: *const c_void,
    len: usize,
    cb: fork_rpc_reply_cb,
    userdata: *mut c_void,
) -> c_int {
    ffi!(fork_pool_call, {
        // SAFETY: per the function contract.
        let pool = unsafe { pool.as_ref() }
            .ok_or_else(|| Error::new(Errno::EINVAL, "the pool is NULL"))?;
        if cb.is_none() {
            return Err(Error::new(Errno::EINVAL, "the reply callback is NULL"));
        }
        // SAFETY: per the function contract.
        let d = unsafe { bytes(data.cast(), len, "data")? };
        pool.pool
            .call(d, reply_cb("fork_pool_call", cb, UserData(userdata)))
            .map(|()| 0)
    })
}

/// The number of workers the pool has now (retiring ones included).
///
/// # Safety
/// `pool` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_pool_workers(pool: *const fork_pool) -> c_int {
    ffi!(fork_pool_workers, {
        // SAFETY: per the function contract.
        let pool = unsafe { pool.as_ref() }
            .ok_or_else(|| Error::new(Errno::EINVAL, "the pool is NULL"))?;
        Ok(pool.pool.workers().min(c_int::MAX as usize) as c_int)
    })
}

/// Frees a pool gracefully: queued calls are still sent and answered,
/// then workers read EOF and exit, the templates exit, then `cb` (may be
/// NULL) runs with status 0. Until then it counts in `fork_pending`.
/// `fork_pool_free(NULL, ...)` does nothing.
///
/// # Safety
/// `pool` is NULL or a live handle, never used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_pool_free(
    pool: *mut fork_pool,
    cb: fork_rpc_destroyed_cb,
    userdata: *mut c_void,
) {
    ffi!(fork_pool_free, {
        if pool.is_null() {
            return Ok(());
        }
        // SAFETY: a live handle, consumed here.
        let p = unsafe { Box::from_raw(pool) };
        let ud = UserData(userdata);
        p.pool.free(Some(Box::new(move || {
            let ud = ud;
            if let Some(cb) = cb {
                // SAFETY: the caller registered `cb` with this signature.
                unsafe { cb(0, ud.0) }
            }
        })));
        Ok(())
    })
}
