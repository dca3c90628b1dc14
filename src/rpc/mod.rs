//! RPC over a process's comm socket, and pools of RPC workers.
//!
//! - `frame`: the framing both ends speak (pure);
//! - `client`: the caller's end of one worker, driven by the reactor;
//! - `worker`: the worker's end (`fork_rpc_serve`), blocking, in the child;
//! - `pool`: workers started from templates on demand, least-loaded first;
//! - `send`: one nonblocking or blocking `send` of a frame, without SIGPIPE.

pub mod client;
mod frame;
pub mod pool;
mod send;
pub mod worker;

pub use client::{OnEvent, Reply, RpcConn};
pub use pool::{Pool, PoolOpts};

/// A Rust handle on one RPC worker; dropping it frees it gracefully.
pub struct Rpc {
    conn: std::sync::Arc<RpcConn>,
}

impl Rpc {
    /// Runs `function` in `p` (consumed, like [`crate::Process::run`]); it
    /// should serve RPC on its comm socket ([`worker::serve`], or any
    /// program speaking the framing).
    pub fn start(
        p: crate::Process,
        function: &str,
        on_event: Option<OnEvent>,
    ) -> crate::Result<Rpc> {
        Ok(Rpc {
            conn: RpcConn::start(p, function, on_event)?,
        })
    }

    /// Queues a request; `cb` gets the reply or an error exactly once
    /// (from dispatch or wait). An error here means `cb` never runs.
    pub fn call(
        &self,
        data: &[u8],
        cb: impl FnOnce(crate::Result<Vec<u8>>) + Send + 'static,
    ) -> crate::Result<()> {
        self.conn.call(data, Box::new(cb)).map(drop)
    }

    /// Calls sent or queued and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.conn.in_flight()
    }

    /// Frees gracefully: calls made are answered, the worker reads EOF,
    /// then `on_destroyed` runs with `None`, or why the worker ended
    /// otherwise (it died, or exited before it was freed).
    pub fn free(self, on_destroyed: impl FnOnce(Option<crate::Error>) + Send + 'static) {
        // Drop then frees again without a callback, which changes nothing.
        self.conn.free(Some(Box::new(on_destroyed)));
    }
}

impl Drop for Rpc {
    fn drop(&mut self) {
        self.conn.free(None);
    }
}
