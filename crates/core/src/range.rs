//! Sets of byte ranges: what an upload has received and what it still lacks.
//!
//! Ranges are half-open (`start..end`) inside the program, because that makes
//! the arithmetic free of `+1`s; wire formats that speak inclusive ranges
//! (`Content-Range`, `missing`) convert at the edge with [`ByteRange::last`].

use std::fmt;

/// A non-empty half-open byte range `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// `None` when the range would be empty.
    pub fn new(start: u64, end: u64) -> Option<ByteRange> {
        (start < end).then_some(ByteRange { start, end })
    }

    /// From an inclusive `first-last` pair, as in `Content-Range`.
    pub fn inclusive(first: u64, last: u64) -> Option<ByteRange> {
        if last < first {
            return None;
        }
        ByteRange::new(first, last.checked_add(1)?)
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The last byte, inclusive.
    pub fn last(&self) -> u64 {
        self.end - 1
    }

    pub fn overlaps(&self, other: &ByteRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.last())
    }
}

/// A set of bytes, kept as sorted, disjoint, non-adjacent ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<ByteRange>,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    pub fn from_ranges(ranges: impl IntoIterator<Item = ByteRange>) -> RangeSet {
        let mut set = RangeSet::new();
        for r in ranges {
            set.insert(r);
        }
        set
    }

    /// Adds a range, merging it with any range it overlaps or touches.
    pub fn insert(&mut self, r: ByteRange) {
        // First range whose end reaches r.start (touching counts).
        let lo = self.ranges.partition_point(|x| x.end < r.start);
        // First range that starts after r.end (touching counts as merge).
        let hi = self.ranges.partition_point(|x| x.start <= r.end);
        if lo == hi {
            self.ranges.insert(lo, r);
            return;
        }
        let merged = ByteRange {
            start: r.start.min(self.ranges[lo].start),
            end: r.end.max(self.ranges[hi - 1].end),
        };
        self.ranges.splice(lo..hi, [merged]);
    }

    pub fn ranges(&self) -> &[ByteRange] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total bytes in the set.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(ByteRange::len).sum()
    }

    /// Whether every byte of `r` is in the set.
    pub fn covers(&self, r: &ByteRange) -> bool {
        let i = self.ranges.partition_point(|x| x.end <= r.start);
        self.ranges
            .get(i)
            .is_some_and(|x| x.start <= r.start && r.end <= x.end)
    }

    /// Whether any byte of `r` is in the set.
    pub fn intersects(&self, r: &ByteRange) -> bool {
        let i = self.ranges.partition_point(|x| x.end <= r.start);
        self.ranges.get(i).is_some_and(|x| x.overlaps(r))
    }

    /// Length of the run of bytes starting at 0.
    pub fn prefix_len(&self) -> u64 {
        match self.ranges.first() {
            Some(r) if r.start == 0 => r.end,
            _ => 0,
        }
    }

    /// End of the highest range (0 when empty).
    pub fn max_end(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.end)
    }

    /// The gaps in `0..total`.
    pub fn missing(&self, total: u64) -> Vec<ByteRange> {
        let mut out = Vec::new();
        let mut at = 0;
        for r in &self.ranges {
            if r.start >= total {
                break;
            }
            if let Some(gap) = ByteRange::new(at, r.start) {
                out.push(gap);
            }
            at = r.end;
        }
        if let Some(gap) = ByteRange::new(at, total) {
            out.push(gap);
        }
        out
    }

    /// Whether `0..total` is entirely present.
    pub fn is_complete(&self, total: u64) -> bool {
        total == 0 || self.prefix_len() >= total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(a: u64, b: u64) -> ByteRange {
        ByteRange::new(a, b).unwrap()
    }

    #[test]
    fn insert_merges_touching_and_overlapping() {
        let mut s = RangeSet::new();
        s.insert(r(10, 20));
        s.insert(r(30, 40));
        assert_eq!(s.ranges(), &[r(10, 20), r(30, 40)]);
        s.insert(r(20, 30));
        assert_eq!(s.ranges(), &[r(10, 40)]);
        s.insert(r(0, 5));
        s.insert(r(3, 12));
        assert_eq!(s.ranges(), &[r(0, 40)]);
    }

    #[test]
    fn missing_lists_gaps_inside_total() {
        let s = RangeSet::from_ranges([r(5, 10), r(20, 30), r(40, 50)]);
        assert_eq!(s.missing(45), vec![r(0, 5), r(10, 20), r(30, 40)]);
        assert_eq!(
            s.missing(60),
            vec![r(0, 5), r(10, 20), r(30, 40), r(50, 60)]
        );
        assert!(RangeSet::new().missing(0).is_empty());
    }

    #[test]
    fn inclusive_conversion() {
        assert_eq!(ByteRange::inclusive(0, 9), Some(r(0, 10)));
        assert_eq!(ByteRange::inclusive(5, 4), None);
        assert_eq!(ByteRange::inclusive(0, u64::MAX), None);
        assert_eq!(r(0, 10).to_string(), "0-9");
    }

    proptest! {
        /// The set behaves exactly like a bitmap of its bytes.
        #[test]
        fn rangeset_matches_bitmap(ops in proptest::collection::vec((0u64..200, 1u64..40), 0..30)) {
            let mut set = RangeSet::new();
            let mut bits = [false; 256];
            for (start, len) in ops {
                set.insert(r(start, start + len));
                for b in &mut bits[start as usize..(start + len) as usize] { *b = true; }
            }
            // Invariant: sorted, disjoint, non-adjacent.
            for w in set.ranges().windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
            prop_assert_eq!(set.len(), bits.iter().filter(|b| **b).count() as u64);
            let missing = set.missing(256);
            let missing_len: u64 = missing.iter().map(|m| m.len()).sum();
            prop_assert_eq!(missing_len + set.len(), 256);
            for m in &missing {
                for i in m.start..m.end { prop_assert!(!bits[i as usize]); }
            }
            for x in set.ranges() {
                for i in x.start..x.end { prop_assert!(bits[i as usize]); }
                prop_assert!(set.covers(x));
            }
            let prefix = bits.iter().take_while(|b| **b).count() as u64;
            prop_assert_eq!(set.prefix_len(), prefix);
        }

        #[test]
        fn covers_and_intersects_agree_with_bitmap(
            ops in proptest::collection::vec((0u64..100, 1u64..20), 0..10),
            q in (0u64..100, 1u64..30),
        ) {
            let mut set = RangeSet::new();
            let mut bits = [false; 160];
            for (start, len) in ops {
                set.insert(r(start, start + len));
                for b in &mut bits[start as usize..(start + len) as usize] { *b = true; }
            }
            let query = r(q.0, q.0 + q.1);
            let slice = &bits[query.start as usize..query.end as usize];
            prop_assert_eq!(set.covers(&query), slice.iter().all(|b| *b));
            prop_assert_eq!(set.intersects(&query), slice.iter().any(|b| *b));
        }
    }
}
