//! Folder ids for the dialects that address folders by id (Box, Graph).
//! Ferry's folders are implicit — paths in a space — so an id is the space
//! and path themselves: `d` + the hex of `<space>/<path>` (a space's root
//! has an empty path). Opaque to clients, stable, and needing no records.
//! Each dialect adds its own alias for the caller's home root (Box `0`,
//! Graph `root`).

pub fn encode(space: &str, path: &str) -> String {
    format!("d{}", hex::encode(format!("{space}/{path}")))
}

/// The (space, path) an id names; `None` for anything that is not an id.
pub fn decode(id: &str) -> Option<(String, String)> {
    let raw = String::from_utf8(hex::decode(id.strip_prefix('d')?).ok()?).ok()?;
    let (space, path) = raw.split_once('/')?;
    Some((space.to_owned(), path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    #[test]
    fn folder_ids_round_trip_and_refuse_anything_else() {
        for (space, path) in [("alice", ""), ("team", "a/b c/ü")] {
            assert_eq!(
                decode(&encode(space, path)),
                Some((space.into(), path.into()))
            );
        }
        assert_eq!(decode("d zz"), None);
        assert_eq!(decode("0"), None);
        assert_eq!(decode("root"), None);
        assert_eq!(decode("12345"), None);
    }
}
