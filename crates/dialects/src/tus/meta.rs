//! `Upload-Metadata` (tus) and what Ferry keeps of an upload's protocol
//! details between requests.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_engine::EngineError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `key base64,key base64,key`: keys with their decoded values.
pub fn parse_upload_metadata(v: &str) -> Result<BTreeMap<String, Option<String>>, EngineError> {
    let bad = |m: String| EngineError::invalid("invalid_metadata", format!("Upload-Metadata: {m}"));
    let mut out = BTreeMap::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut it = pair.split(' ').filter(|s| !s.is_empty());
        let key = it.next().unwrap_or_default();
        let value = it.next();
        if it.next().is_some() {
            return Err(bad(format!("{pair:?} is not 'key base64-value'")));
        }
        let value = match value {
            None => None,
            Some(b64) => {
                let raw = B64
                    .decode(b64)
                    .map_err(|_| bad(format!("the value of {key:?} is not valid base64")))?;
                Some(
                    String::from_utf8(raw)
                        .map_err(|_| bad(format!("the value of {key:?} is not UTF-8 text")))?,
                )
            }
        };
        if out.insert(key.to_owned(), value).is_some() {
            return Err(bad(format!("the key {key:?} appears twice")));
        }
    }
    Ok(out)
}

/// How a tus upload relates to concatenation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concat {
    #[default]
    None,
    Partial,
    /// The upload URLs it was made of, as the client sent them.
    Final(String),
}

/// The upload's `dialect_state`: what HEAD must echo.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stored {
    /// The client's `Upload-Metadata`, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_metadata: Option<String>,
    #[serde(default, skip_serializing_if = "is_none")]
    pub concat: Concat,
}

fn is_none(c: &Concat) -> bool {
    *c == Concat::None
}

impl Stored {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serializable")
    }

    pub fn of(upload: &ferry_core::Upload) -> Stored {
        upload
            .dialect_state
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_metadata_decodes_values_and_keeps_valueless_keys() {
        let m =
            parse_upload_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
                .unwrap();
        assert_eq!(m["filename"].as_deref(), Some("world_domination_plan.pdf"));
        assert_eq!(m["is_confidential"], None);
    }

    #[test]
    fn upload_metadata_rejects_bad_base64_and_duplicate_keys() {
        assert!(parse_upload_metadata("filename !!!").is_err());
        assert!(parse_upload_metadata("a YQ==,a Yg==").is_err());
        assert!(parse_upload_metadata("a YQ== extra").is_err());
        assert!(parse_upload_metadata("").unwrap().is_empty());
    }
}

/// Fuzzing campaign (issue 11, G): `Upload-Metadata` never panics, and
/// what a client encodes comes back.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn upload_metadata_never_panics(v in prop_oneof![any::<String>(), "([a-z]{0,5}( [A-Za-z0-9+/=]{0,12})?,? ?){0,4}"]) {
            let _ = parse_upload_metadata(&v);
        }

        #[test]
        fn upload_metadata_round_trips(pairs in proptest::collection::btree_map("[a-zA-Z0-9_.-]{1,12}", proptest::option::of(any::<String>()), 0..6)) {
            let header = pairs
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k} {}", B64.encode(v)),
                    None => k.clone(),
                })
                .collect::<Vec<_>>()
                .join(",");
            let parsed = parse_upload_metadata(&header).unwrap();
            // An empty value encodes to nothing: the key comes back bare.
            let want: BTreeMap<String, Option<String>> = pairs
                .into_iter()
                .map(|(k, v)| (k, v.filter(|v| !v.is_empty())))
                .collect();
            let got: BTreeMap<String, Option<String>> = parsed
                .into_iter()
                .map(|(k, v)| (k, v.filter(|v| !v.is_empty())))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
