//! The folder WebSocket's binary messages (UCloud's `WEBSOCKET_V2`). All
//! integers are big-endian. A frame holds one or more messages, each
//! starting with its opcode, except a LISTING: one opcode, then entries to
//! the end of the frame.
//!
//! | opcode | message | layout after the opcode |
//! |---|---|---|
//! | 0 | OK | fileId i32 |
//! | 1 | CHECKSUM | reserved (refused) |
//! | 2 | CHUNK | fileId i32, then data to the end of the frame |
//! | 3 | SKIP | fileId i32 |
//! | 4 | LISTING | entries: fileId i32, size i64, modifiedAt i64 (ms), path (u32 length + UTF-8) |
//! | 5 | FILES_COMPLETED | count i32 |
//! | 6 | CLOSE | nothing |

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const OK: u8 = 0;
pub const CHUNK: u8 = 2;
pub const SKIP: u8 = 3;
pub const LISTING: u8 = 4;
pub const FILES_COMPLETED: u8 = 5;
pub const CLOSE: u8 = 6;

/// One file announced by a LISTING.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: i32,
    pub size: u64,
    pub modified_at: i64,
    pub path: String,
}

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Listing(Vec<Entry>),
    Chunk(i32, Bytes),
    Skip(i32),
    Close,
}

/// Parses one binary frame into its messages.
pub fn parse(frame: Bytes) -> Result<Vec<Incoming>, String> {
    let mut buf = frame;
    let mut out = Vec::new();
    let need = |buf: &Bytes, n: usize, what: &str| {
        if buf.remaining() < n {
            Err(format!("the frame ends inside a {what}"))
        } else {
            Ok(())
        }
    };
    while buf.has_remaining() {
        let op = buf.get_u8();
        match op {
            LISTING => {
                let mut entries = Vec::new();
                while buf.has_remaining() {
                    need(&buf, 4 + 8 + 8 + 4, "LISTING entry")?;
                    let id = buf.get_i32();
                    let size = buf.get_i64();
                    let modified_at = buf.get_i64();
                    let len = buf.get_u32() as usize;
                    need(&buf, len, "LISTING path")?;
                    let path = String::from_utf8(buf.split_to(len).to_vec())
                        .map_err(|_| format!("the path of file {id} is not UTF-8"))?;
                    let size = u64::try_from(size)
                        .map_err(|_| format!("file {id} has a negative size {size}"))?;
                    entries.push(Entry {
                        id,
                        size,
                        modified_at,
                        path,
                    });
                }
                out.push(Incoming::Listing(entries));
            }
            CHUNK => {
                need(&buf, 4, "CHUNK")?;
                let id = buf.get_i32();
                out.push(Incoming::Chunk(id, std::mem::take(&mut buf)));
            }
            SKIP => {
                need(&buf, 4, "SKIP")?;
                out.push(Incoming::Skip(buf.get_i32()));
            }
            CLOSE => out.push(Incoming::Close),
            other => return Err(format!("opcode {other} is not one a client sends")),
        }
    }
    Ok(out)
}

/// Appends an OK or a SKIP for a file.
pub fn put_answer(buf: &mut BytesMut, op: u8, id: i32) {
    buf.put_u8(op);
    buf.put_i32(id);
}

pub fn files_completed(count: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u8(FILES_COMPLETED);
    b.put_i32(count);
    b.freeze()
}

/// A LISTING frame (what a client sends).
#[cfg(test)]
pub fn listing(entries: &[Entry]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(LISTING);
    for e in entries {
        b.put_i32(e.id);
        b.put_i64(e.size as i64);
        b.put_i64(e.modified_at);
        b.put_u32(e.path.len() as u32);
        b.put_slice(e.path.as_bytes());
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(frame: &[u8], expect: Result<Vec<Incoming>, &str>) {
        let got = parse(Bytes::copy_from_slice(frame));
        match expect {
            Ok(v) => assert_eq!(got.unwrap(), v),
            Err(e) => assert!(got.unwrap_err().contains(e)),
        }
    }

    #[test]
    fn frames_parse_into_messages() {
        let e = Entry {
            id: 7,
            size: 3,
            modified_at: 1_700_000_000_000,
            path: "d/é.txt".into(),
        };
        let f = Entry {
            id: -1,
            size: 0,
            modified_at: 0,
            path: "x".into(),
        };
        check(
            &listing(&[e.clone(), f.clone()]),
            Ok(vec![Incoming::Listing(vec![e, f])]),
        );
        check(
            &[2, 0, 0, 0, 7, b'a', b'b'],
            Ok(vec![Incoming::Chunk(7, Bytes::from_static(b"ab"))]),
        );
        check(&[2, 0, 0, 0, 7], Ok(vec![Incoming::Chunk(7, Bytes::new())]));
        check(
            &[3, 0, 0, 0, 1, 3, 0, 0, 0, 2, 6],
            Ok(vec![Incoming::Skip(1), Incoming::Skip(2), Incoming::Close]),
        );
        check(&[4], Ok(vec![Incoming::Listing(vec![])]));
        check(&[3, 0, 0], Err("inside a SKIP"));
        check(&[4, 0, 0, 0, 1, 0], Err("inside a LISTING entry"));
        check(&[1, 0, 0, 0, 1], Err("opcode 1"));
        check(&[0, 0, 0, 0, 1], Err("opcode 0"));
        let mut neg = listing(&[Entry {
            id: 1,
            size: 0,
            modified_at: 0,
            path: String::new(),
        }])
        .to_vec();
        neg[5] = 0xff;
        check(&neg, Err("negative size"));
    }

    #[test]
    fn answers_are_opcode_and_id() {
        let mut b = BytesMut::new();
        put_answer(&mut b, OK, 1);
        put_answer(&mut b, SKIP, 258);
        assert_eq!(&b[..], &[0, 0, 0, 0, 1, 3, 0, 0, 1, 2]);
        assert_eq!(&files_completed(3)[..], &[5, 0, 0, 0, 3]);
    }
}

/// Fuzzing campaign (issue 11, G): no frame a client sends panics the
/// parser, and a frame that parses holds only what it carried.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn any_frame_parses_or_is_refused_without_panicking(frame in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(msgs) = parse(Bytes::from(frame.clone())) {
                let carried: usize = msgs
                    .iter()
                    .map(|m| match m {
                        Incoming::Chunk(_, b) => b.len(),
                        _ => 0,
                    })
                    .sum();
                prop_assert!(carried <= frame.len());
            }
        }

        /// Frames that start with a real opcode and carry huge counts or
        /// lengths reach the deeper branches.
        #[test]
        fn frames_with_real_opcodes_never_panic(op in 0u8..8, counts in proptest::collection::vec(any::<u32>(), 0..4), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut frame = vec![op];
            for c in counts {
                frame.extend_from_slice(&c.to_be_bytes());
            }
            frame.extend_from_slice(&tail);
            let _ = parse(Bytes::from(frame));
        }
    }
}
