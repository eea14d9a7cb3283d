//! The network's building blocks, one file each.

pub mod attention;
pub mod block;
pub mod linear;
pub mod mlp;
pub mod norm;
pub mod rope;
