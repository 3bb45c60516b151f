//! What happens when a commit finds its destination taken.

use crate::path::SpacePath;
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
pub fn renamed(path: &SpacePath, n: u32) -> SpacePath {
    let name = path.name();
    let split = name
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '.')
        .map(|(i, _)| i);
    let new = match split {
        Some(i) => format!("{} ({n}){}", &name[..i], &name[i..]),
        None => format!("{name} ({n})"),
    };
    path.with_name(&new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, n: u32, expect: &str) {
        let p = SpacePath::parse(input).unwrap();
        assert_eq!(renamed(&p, n).as_str(), expect);
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
