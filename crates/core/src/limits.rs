//! Size and count limits, and how a file is cut into parts.

use crate::model::Length;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Every limit the engine enforces. Each violation is reported with the
/// limit's name and value so that a client can tell what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_file_size: u64,
    pub min_part_size: u64,
    pub max_part_size: u64,
    pub default_part_size: u64,
    pub max_parts: u64,
    pub max_uploads_per_session: usize,
    pub max_open_sessions: u32,
    /// Per-user quota when the user has none of their own; `None` = unlimited.
    pub default_quota: Option<u64>,
    pub default_expiry_secs: u64,
    pub max_expiry_secs: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_file_size: 5 * 1024 * GIB,
            min_part_size: 64 * 1024,
            max_part_size: 5 * GIB,
            default_part_size: 16 * MIB,
            max_parts: 10_000,
            max_uploads_per_session: 10_000,
            max_open_sessions: 100,
            default_quota: None,
            default_expiry_secs: 24 * 3600,
            max_expiry_secs: 7 * 24 * 3600,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the declared size {size} is over the maximum file size of {limit} bytes")]
    FileTooLarge { size: u64, limit: u64 },
    #[error("the part size {part_size} is outside the allowed {min}..={max} bytes")]
    PartSize { part_size: u64, min: u64, max: u64 },
    #[error(
        "{size} bytes in parts of {part_size} make {parts} parts; the limit is {limit} parts per upload"
    )]
    TooManyParts {
        size: u64,
        part_size: u64,
        parts: u64,
        limit: u64,
    },
}

/// How an upload is cut into parts: part `n` (1-based) covers
/// `(n-1)*part_size .. min(n*part_size, size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartPlan {
    pub part_size: u64,
}

impl PartPlan {
    /// Number of parts for a known size (0 for an empty file).
    pub fn total_parts(&self, size: u64) -> u64 {
        size.div_ceil(self.part_size)
    }

    /// Byte range of part `n` given the length, or `None` if `n` is out of
    /// range. With a deferred length any `n` up to `max_parts` is a full part.
    pub fn part_range(&self, n: u64, length: Length) -> Option<(u64, u64)> {
        if n == 0 {
            return None;
        }
        let start = (n - 1).checked_mul(self.part_size)?;
        match length {
            Length::Known(size) => (start < size || (size == 0 && n == 1))
                .then(|| (start, (start + self.part_size).min(size))),
            Length::Deferred => Some((start, start.checked_add(self.part_size)?)),
        }
    }
}

impl Limits {
    /// Checks a declared length and chooses the part size, honouring the
    /// client's hint when it is within bounds.
    pub fn plan(&self, length: Length, hint: Option<u64>) -> Result<PartPlan, LimitError> {
        let size = match length {
            Length::Known(s) => s,
            Length::Deferred => self.max_file_size,
        };
        if let Length::Known(s) = length
            && s > self.max_file_size
        {
            return Err(LimitError::FileTooLarge {
                size: s,
                limit: self.max_file_size,
            });
        }
        let part_size = match hint {
            Some(h) => {
                if h == 0 || h > self.max_part_size || (h < self.min_part_size && h < size) {
                    return Err(LimitError::PartSize {
                        part_size: h,
                        min: self.min_part_size,
                        max: self.max_part_size,
                    });
                }
                h
            }
            None => {
                // Big enough to stay under max_parts, rounded up to whole MiB.
                let needed = size.div_ceil(self.max_parts).div_ceil(MIB) * MIB;
                self.default_part_size.max(needed).min(self.max_part_size)
            }
        };
        let plan = PartPlan { part_size };
        if let Length::Known(s) = length {
            let parts = plan.total_parts(s);
            if parts > self.max_parts {
                return Err(LimitError::TooManyParts {
                    size: s,
                    part_size,
                    parts,
                    limit: self.max_parts,
                });
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_keeps_under_max_parts() {
        let l = Limits::default();
        let p = l.plan(Length::Known(GIB), None).unwrap();
        assert_eq!(p.part_size, 16 * MIB);
        assert_eq!(p.total_parts(GIB), 64);
        let huge = 1024 * GIB;
        let p = l.plan(Length::Known(huge), None).unwrap();
        assert!(p.total_parts(huge) <= 10_000);
        assert_eq!(p.part_size % MIB, 0);
    }

    #[test]
    fn plan_limits() {
        let l = Limits::default();
        assert!(matches!(
            l.plan(Length::Known(l.max_file_size + 1), None),
            Err(LimitError::FileTooLarge { .. })
        ));
        assert!(matches!(
            l.plan(Length::Known(GIB), Some(1000)),
            Err(LimitError::PartSize { .. })
        ));
        // A small file may use a part smaller than the minimum: it is one part.
        assert_eq!(
            l.plan(Length::Known(4096), Some(4096)).unwrap().part_size,
            4096
        );
        assert!(matches!(
            l.plan(Length::Known(GIB), Some(64 * 1024)),
            Err(LimitError::TooManyParts { parts: 16384, .. })
        ));
    }

    #[test]
    fn part_ranges() {
        let p = PartPlan { part_size: 10 };
        assert_eq!(p.part_range(1, Length::Known(25)), Some((0, 10)));
        assert_eq!(p.part_range(3, Length::Known(25)), Some((20, 25)));
        assert_eq!(p.part_range(4, Length::Known(25)), None);
        assert_eq!(p.part_range(0, Length::Known(25)), None);
        assert_eq!(p.part_range(1, Length::Known(0)), Some((0, 0)));
        assert_eq!(p.part_range(7, Length::Deferred), Some((60, 70)));
    }
}
