//! Names of spaces and paths inside them.
//!
//! A [`SpacePath`] is the only way a path reaches storage, so every check
//! that keeps a path confined to its space lives in [`SpacePath::parse`]:
//! `.`/empty segments are dropped, `..` is refused (never resolved), and NUL,
//! control characters, backslashes and over-long names are refused with an
//! error that says which rule was broken.

use std::fmt;

/// Longest accepted path inside a space, in bytes (after normalization):
/// S3's key limit, and small enough that `<data dir>/spaces/<space>/<path>`
/// stays under the 4,096-byte `PATH_MAX` of Linux for any data dir of up to
/// [`MAX_ROOT_BYTES`] (checked at start-up).
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest accepted single name (segment), in bytes; most filesystems stop here.
pub const MAX_NAME_BYTES: usize = 255;
/// Deepest accepted folder nesting.
pub const MAX_DEPTH: usize = 64;
/// Longest space name, in bytes.
pub const MAX_SPACE_BYTES: usize = 64;
/// Longest storage root (data dir) for which every accepted path fits the
/// 4,096-byte `PATH_MAX` (with `/spaces/`, a space, a `/` and a NUL).
pub const MAX_ROOT_BYTES: usize =
    4096 - 1 - "/spaces/".len() - MAX_SPACE_BYTES - 1 - MAX_PATH_BYTES;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("the path is {len} bytes long; the limit is {MAX_PATH_BYTES}")]
    TooLong { len: usize },
    #[error("the name {name:?} is {len} bytes long; the limit is {MAX_NAME_BYTES}")]
    NameTooLong { name: String, len: usize },
    #[error("the path is nested {depth} folders deep; the limit is {MAX_DEPTH}")]
    TooDeep { depth: usize },
    #[error("the path contains '..', which could escape its space")]
    DotDot,
    #[error("the path contains a NUL byte")]
    Nul,
    #[error("the path contains the control character U+{0:04X}")]
    Control(u32),
    #[error("the path contains a backslash; use '/' to separate folders")]
    Backslash,
    #[error(
        "{0:?} is not a valid space name: use 1 to 64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    )]
    BadSpace(String),
}

/// A normalized, confined path inside a space: `a/b/c.bin`, never empty,
/// never starting with `/`, free of `.`, `..` and empty segments.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpacePath(String);

impl SpacePath {
    /// Normalizes and checks a client-supplied path. A leading `/` means the
    /// root of the space, not the root of the machine.
    pub fn parse(raw: &str) -> Result<SpacePath, PathError> {
        // Generous bound on the raw input (`./` and `//` are dropped below);
        // the normalized path is held to `MAX_PATH_BYTES`.
        if raw.len() > 4 * MAX_PATH_BYTES {
            return Err(PathError::TooLong { len: raw.len() });
        }
        SpacePath::parse_with(raw, true)
    }

    /// A path read back from storage: confined like [`SpacePath::parse`],
    /// but not held to the length limits, which may have been wider when
    /// it was stored (a record must stay readable across upgrades).
    pub fn parse_stored(raw: &str) -> Result<SpacePath, PathError> {
        SpacePath::parse_with(raw, false)
    }

    fn parse_with(raw: &str, limits: bool) -> Result<SpacePath, PathError> {
        if let Some(c) = raw.chars().find(|c| c.is_control()) {
            return Err(if c == '\0' {
                PathError::Nul
            } else {
                PathError::Control(c as u32)
            });
        }
        if raw.contains('\\') {
            return Err(PathError::Backslash);
        }
        let mut segments = Vec::new();
        for seg in raw.split('/') {
            match seg {
                "" | "." => continue,
                ".." => return Err(PathError::DotDot),
                s if limits && s.len() > MAX_NAME_BYTES => {
                    return Err(PathError::NameTooLong {
                        name: s.chars().take(32).collect::<String>() + "…",
                        len: s.len(),
                    });
                }
                s => segments.push(s),
            }
        }
        if segments.is_empty() {
            return Err(PathError::Empty);
        }
        if !limits {
            return Ok(SpacePath(segments.join("/")));
        }
        let len = segments.iter().map(|s| s.len() + 1).sum::<usize>() - 1;
        if len > MAX_PATH_BYTES {
            return Err(PathError::TooLong { len });
        }
        if segments.len() > MAX_DEPTH {
            return Err(PathError::TooDeep {
                depth: segments.len(),
            });
        }
        Ok(SpacePath(segments.join("/")))
    }

    /// Like [`SpacePath::parse`] but an empty path (the root) is allowed and
    /// gives `None`; used for listing prefixes.
    pub fn parse_prefix(raw: &str) -> Result<Option<SpacePath>, PathError> {
        match SpacePath::parse(raw) {
            Ok(p) => Ok(Some(p)),
            Err(PathError::Empty) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// Everything before the last segment, if any.
    pub fn parent(&self) -> Option<SpacePath> {
        self.0
            .rsplit_once('/')
            .map(|(p, _)| SpacePath(p.to_owned()))
    }

    /// Each proper ancestor folder, shortest first (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(move |(i, _)| &self.0[..i])
    }

    /// The same folder with another final name, if the result is still a
    /// valid path (within every limit).
    pub fn with_name(&self, name: &str) -> Result<SpacePath, PathError> {
        match self.parent() {
            Some(p) => SpacePath::parse(&format!("{}/{}", p.0, name)),
            None => SpacePath::parse(name),
        }
    }

    /// Appends a relative path, if the result is within every limit.
    pub fn join(&self, rel: &SpacePath) -> Result<SpacePath, PathError> {
        SpacePath::parse(&format!("{}/{}", self.0, rel.0))
    }
}

impl fmt::Display for SpacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a space: also a directory name on disk, so it is kept to a
/// conservative alphabet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpaceName(String);

impl SpaceName {
    pub fn parse(raw: &str) -> Result<SpaceName, PathError> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_SPACE_BYTES
            && raw.as_bytes()[0].is_ascii_alphanumeric()
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(SpaceName(raw.to_owned()))
        } else {
            Err(PathError::BadSpace(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(raw: &str, expect: Result<&str, PathError>) {
        assert_eq!(
            SpacePath::parse(raw).map(|p| p.0),
            expect.map(str::to_owned),
            "input {raw:?}"
        );
    }

    #[test]
    fn normalization_table() {
        check("a/b.bin", Ok("a/b.bin"));
        check("/a//b/./c", Ok("a/b/c"));
        check("a/b/", Ok("a/b"));
        check("héllo wörld.txt", Ok("héllo wörld.txt"));
        check("", Err(PathError::Empty));
        check("/./", Err(PathError::Empty));
        check("a/../b", Err(PathError::DotDot));
        check("..", Err(PathError::DotDot));
        check("a\0b", Err(PathError::Nul));
        check("a\nb", Err(PathError::Control(10)));
        check("a\u{7f}", Err(PathError::Control(0x7f)));
        check("a\\b", Err(PathError::Backslash));
        check("...", Ok("..."));
        let long = "x".repeat(256);
        assert!(matches!(
            SpacePath::parse(&long),
            Err(PathError::NameTooLong { len: 256, .. })
        ));
        assert!(matches!(
            SpacePath::parse(&"a/".repeat(3000)),
            Err(PathError::TooLong { .. })
        ));
    }

    #[test]
    fn a_path_is_held_to_the_limits_exactly_at_the_limit() {
        let name = "n".repeat(MAX_NAME_BYTES);
        assert!(SpacePath::parse(&name).is_ok());
        let exact = format!("{}/", "d".repeat(99)).repeat(10) + &"x".repeat(24);
        assert_eq!(
            SpacePath::parse(&exact).unwrap().as_str().len(),
            MAX_PATH_BYTES
        );
        assert!(matches!(
            SpacePath::parse(&format!("{exact}y")),
            Err(PathError::TooLong { len }) if len == MAX_PATH_BYTES + 1
        ));
        // The 4,090-byte path of issue 11 is refused when parsed.
        let long = format!("{}/", "d".repeat(99)).repeat(40) + &"f".repeat(90);
        assert_eq!(long.len(), 4090);
        assert!(matches!(
            SpacePath::parse(&long),
            Err(PathError::TooLong { .. })
        ));
        let deep = "a/".repeat(MAX_DEPTH);
        assert!(SpacePath::parse(&deep).is_ok());
        assert!(matches!(
            SpacePath::parse(&format!("{deep}b")),
            Err(PathError::TooDeep { depth }) if depth == MAX_DEPTH + 1
        ));
        assert!(matches!(
            SpacePath::parse(&"a/".repeat(100)),
            Err(PathError::TooDeep { depth: 100 })
        ));
    }

    #[test]
    fn parts_of_a_path() {
        let p = SpacePath::parse("a/b/c.txt").unwrap();
        assert_eq!(p.name(), "c.txt");
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.ancestors().collect::<Vec<_>>(), vec!["a", "a/b"]);
        assert_eq!(p.with_name("d").unwrap().as_str(), "a/b/d");
        assert!(p.with_name(&"d".repeat(256)).is_err());
        assert_eq!(SpacePath::parse("x").unwrap().parent(), None);
    }

    #[test]
    fn space_names() {
        assert!(SpaceName::parse("alice").is_ok());
        assert!(SpaceName::parse("team-1.data_x").is_ok());
        for bad in ["", "Alice", "-x", ".x", "a/b", "a b", &"a".repeat(65)] {
            assert!(SpaceName::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Whatever comes in, what comes out is confined: no '..', no empty
        /// or '.' segment, no leading '/', and normalizing again is a no-op.
        #[test]
        fn parsed_paths_are_confined(raw in "[a-z./\\\\\\x00\\n]{0,40}") {
            if let Ok(p) = SpacePath::parse(&raw) {
                prop_assert!(!p.as_str().starts_with('/'));
                for seg in p.as_str().split('/') {
                    prop_assert!(!seg.is_empty() && seg != "." && seg != "..");
                }
                prop_assert!(!p.as_str().contains('\0'));
                prop_assert_eq!(SpacePath::parse(p.as_str()).unwrap(), p.clone());
            }
        }
    }
}
