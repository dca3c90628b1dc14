//! What the two programs share: the frames on their socket ([`wire`]) and
//! the environment variables a server is started with ([`env`]).

pub mod env;
pub mod wire;
