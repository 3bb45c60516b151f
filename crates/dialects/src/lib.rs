//! Wire formats onto the one engine.
//!
//! Each module is a thin translator: parse the request into engine inputs,
//! make one engine call, render the answer and the errors in the dialect's
//! own shapes. No business rule lives here, and dialects never depend on
//! each other. Today: [`native`]. The vendor dialects (tus, Box, Graph,
//! Veeva, UCloud, deepset) will sit beside it.

pub mod native;
