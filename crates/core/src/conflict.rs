//! What happens when a commit finds its destination taken.

use crate::path::{MAX_NAME_BYTES, MAX_PATH_BYTES, SpacePath};
use std::fmt;
use std::str::FromStr;

/// The engine's conflict vocabulary; every dialect maps its own words onto it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ConflictPolicy {
    /// Refuse the commit (`already_exists`).
    #[default]
    Fail,
    /// Atomically replace the existing file.
    Replace,
    /// Keep both: the new file gets the first free name `name (n).ext`.
    Rename,
    /// Keep the existing file and drop the new bytes.
    Skip,
    /// For folder uploads: existing folders are reused, files rename.
    MergeRename,
}

impl ConflictPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::Fail => "fail",
            ConflictPolicy::Replace => "replace",
            ConflictPolicy::Rename => "rename",
            ConflictPolicy::Skip => "skip",
            ConflictPolicy::MergeRename => "merge-rename",
        }
    }

    /// Whether a taken name is resolved by picking another one.
    pub fn renames(self) -> bool {
        matches!(self, ConflictPolicy::Rename | ConflictPolicy::MergeRename)
    }
}

impl fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConflictPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "fail" => ConflictPolicy::Fail,
            "replace" => ConflictPolicy::Replace,
            "rename" => ConflictPolicy::Rename,
            "skip" => ConflictPolicy::Skip,
            "merge-rename" => ConflictPolicy::MergeRename,
            other => {
                return Err(format!(
                    "unknown conflict policy {other:?}; expected fail, replace, rename, skip or merge-rename"
                ));
            }
        })
    }
}

/// The `n`-th alternative name for `path` (n ≥ 1): `report (1).pdf`,
/// `archive (2).tar.gz`, `README (3)`. The suffix goes before the first
/// extension dot of the name (not a leading dot), so compound extensions and
/// dotfiles stay recognisable.
///
/// The result always fits [`MAX_NAME_BYTES`] and [`MAX_PATH_BYTES`]: as
/// desktop systems do, the stem is shortened (on a character boundary) to
/// make room for the suffix, and when even that is not enough (an extension
/// of nearly the whole name) the suffix goes at the end of the shortened
/// name. `None` when no name fits (the folder's path alone is nearly at the
/// path limit).
pub fn renamed(path: &SpacePath, n: u32) -> Option<SpacePath> {
    let name = path.name();
    let suffix = format!(" ({n})");
    let room = MAX_NAME_BYTES.min(MAX_PATH_BYTES - (path.as_str().len() - name.len()));
    let split = name
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '.')
        .map(|(i, _)| i);
    let (stem, ext) = match split {
        // Keep the extension if at least one character of the stem fits.
        Some(i) if suffix.len() + (name.len() - i) < room => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let stem = floor_char_boundary(stem, room.checked_sub(suffix.len() + ext.len())?);
    if stem.is_empty() {
        return None;
    }
    path.with_name(&format!("{stem}{suffix}{ext}")).ok()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn floor_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, n: u32, expect: &str) {
        let p = SpacePath::parse(input).unwrap();
        assert_eq!(renamed(&p, n).unwrap().as_str(), expect);
    }

    #[test]
    fn a_255_byte_name_renamed_on_conflict_fits_the_name_limit() {
        let stem = "s".repeat(MAX_NAME_BYTES - 4);
        let p = SpacePath::parse(&format!("d/{stem}.txt")).unwrap();
        assert_eq!(p.name().len(), MAX_NAME_BYTES);
        let r = renamed(&p, 1).unwrap();
        assert_eq!(r.name().len(), MAX_NAME_BYTES);
        assert_eq!(r.name(), format!("{} (1).txt", &stem[..stem.len() - 4]));
        let r = renamed(&p, 10_000).unwrap();
        assert_eq!(r.name().len(), MAX_NAME_BYTES);
        assert!(r.name().ends_with(" (10000).txt"));
        // No extension: the whole name is the stem.
        let p = SpacePath::parse(&"n".repeat(MAX_NAME_BYTES)).unwrap();
        assert_eq!(renamed(&p, 2).unwrap().name().len(), MAX_NAME_BYTES);
        // A 254-byte name still gets its whole stem plus the suffix cut to fit.
        let p = SpacePath::parse(&"n".repeat(MAX_NAME_BYTES - 1)).unwrap();
        assert_eq!(renamed(&p, 2).unwrap().name().len(), MAX_NAME_BYTES);
    }

    #[test]
    fn a_shortened_stem_ends_on_a_character_boundary() {
        // 'é' is two bytes: 125 of them, an 'x' and ".abc" make 255 bytes.
        let p = SpacePath::parse(&format!("{}x.abc", "é".repeat(125))).unwrap();
        assert_eq!(p.name().len(), MAX_NAME_BYTES);
        let r = renamed(&p, 1).unwrap();
        // 255 - 8 = 247 falls inside an 'é': the stem is cut to 246 bytes.
        assert_eq!(r.name(), format!("{} (1).abc", "é".repeat(123)));
    }

    #[test]
    fn a_rename_keeps_the_path_within_the_path_limit() {
        let dirs = format!("{}/", "d".repeat(99)).repeat(10); // 1000 bytes
        let p = SpacePath::parse(&format!("{dirs}{}.bin", "f".repeat(20))).unwrap();
        assert_eq!(p.as_str().len(), MAX_PATH_BYTES);
        let r = renamed(&p, 3).unwrap();
        assert_eq!(r.as_str().len(), MAX_PATH_BYTES);
        assert_eq!(r.name(), format!("{} (3).bin", "f".repeat(16)));
        // A folder path of 1,020 bytes leaves no room for a suffixed name.
        let dirs = format!("{}/", "d".repeat(254)).repeat(4);
        let p = SpacePath::parse(&format!("{dirs}abcd")).unwrap();
        assert_eq!(renamed(&p, 1), None);
    }

    #[test]
    fn a_long_extension_gives_way_to_the_suffix() {
        let p = SpacePath::parse(&format!("a.{}", "e".repeat(MAX_NAME_BYTES - 2))).unwrap();
        let r = renamed(&p, 1).unwrap();
        assert_eq!(r.name().len(), MAX_NAME_BYTES);
        assert!(r.name().ends_with(" (1)"));
    }

    #[test]
    fn rename_table() {
        check("report.pdf", 1, "report (1).pdf");
        check("d/archive.tar.gz", 2, "d/archive (2).tar.gz");
        check("README", 3, "README (3)");
        check(".bashrc", 1, ".bashrc (1)");
        check("a/.env.local", 1, "a/.env (1).local");
        check("x.", 1, "x (1).");
    }

    #[test]
    fn policy_round_trips() {
        for p in [
            ConflictPolicy::Fail,
            ConflictPolicy::Replace,
            ConflictPolicy::Rename,
            ConflictPolicy::Skip,
            ConflictPolicy::MergeRename,
        ] {
            assert_eq!(p.as_str().parse::<ConflictPolicy>(), Ok(p));
        }
        assert!("overwrite".parse::<ConflictPolicy>().is_err());
    }
}
