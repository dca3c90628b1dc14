//! Environment variables between the library and the servers it starts.

/// Tells a started server the fd number of its end of the socket.
pub const FD_ENV: &str = "ANYFORK_FD";
/// Names the `anyfork-serve` executable the library starts.
pub const SERVE_ENV: &str = "ANYFORK_SERVE";
