//! The rules of an upload session, with no IO.
//!
//! Everything that *decides* lives here: which byte ranges an upload has,
//! which are missing, whether a path is acceptable inside a space, how a
//! conflicting name is renamed, which state transitions are legal, how a
//! file is cut into parts and which limits apply. Nothing here touches the
//! disk, the network, a clock or a random number generator: callers pass
//! the current time and fresh ids in. That keeps the core deterministic and
//! property-testable, and lets every storage backend and every wire dialect
//! share the same rules.

pub mod conflict;
pub mod digest;
pub mod limits;
pub mod model;
pub mod path;
pub mod range;

pub use conflict::ConflictPolicy;
pub use digest::{Digest, DigestAlgo, join_tagged, split_tagged};
pub use limits::{Limits, PartPlan};
pub use model::*;
pub use path::{PathError, SpaceName, SpacePath};
pub use range::{ByteRange, RangeSet};
