//! `overlay`: kernel overlayfs semantics and on-disk format over FUSE.

pub mod layout;

pub use layout::{Layout, LayoutError};
