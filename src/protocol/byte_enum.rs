//! [`byte_enum!`]: an enum whose variants are named by one byte each on
//! the wire, defined from one list so that a byte cannot be written for
//! one variant and read as another.

/// Defines `enum $name { $variant = $byte, … }` (`#[repr(u8)]`, so
/// `v as u8` is its byte) and `$name::from_byte`, the variant a byte
/// names, if any.
macro_rules! byte_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident = $byte:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        $vis enum $name {
            $($variant = $byte,)*
        }

        impl $name {
            /// The variant `b` names, if any.
            pub fn from_byte(b: u8) -> Option<$name> {
                match b {
                    $($byte => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

pub(crate) use byte_enum;
