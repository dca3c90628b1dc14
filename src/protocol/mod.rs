//! What the two programs share: the frames on their socket ([`wire`]) and
//! the environment variables a server is started with ([`env`]).

mod byte_enum;
pub mod env;
pub mod wire;

pub(crate) use byte_enum::byte_enum;
