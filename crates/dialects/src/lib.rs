//! Wire formats onto the one engine.
//!
//! Each module is a thin translator: parse the request into engine inputs,
//! make one engine call, render the answer and the errors in the dialect's
//! own shapes. No business rule lives here, and dialects never depend on
//! each other. Today: [`native`], [`tus`] (tus 1.0 and the IETF draft),
//! [`graph`] (Microsoft Graph upload sessions), [`boxapi`] (Box chunked
//! uploads), [`veeva`] (Veeva Vault file-staging upload sessions),
//! [`ucloud`] (UCloud's CHUNKED and WebSocket uploads) and [`deepset`]
//! (deepset upload sessions with an S3-style POST form).

pub mod boxapi;
pub mod deepset;
pub mod folder_id;
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod native;
pub mod tus;
pub mod ucloud;
pub mod veeva;
