//! The environment view: which outputs go into it (`propagated`), how they merge into one tree
//! (`tree`), and how that tree becomes a content-addressed store path (`install`).

pub mod install;
pub mod propagated;
pub mod tree;
