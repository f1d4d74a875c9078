//! The agent's tags file and keyring file (spec §5.7): JSON, read at start, rewritten (mode
//! 0600, indented like Go's `json.MarshalIndent`, replaced whole by a rename) whenever the tags
//! or the keyring change.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use thiserror::Error;
use vassal_memberlist::wire::Keyring;

/// A tags or keyring file that could not be used. At start the agent stops; at run time the
/// change that needed the file was not made.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("Failed to read tags file {path}: {source}")]
    TagsRead { path: PathBuf, source: io::Error },
    #[error(
        "Failed to decode tags file {path}: {source} (it must hold a JSON object of strings, \
         e.g. {{\"role\": \"web\"}})"
    )]
    TagsDecode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("Failed to write tags file {path}: {source}")]
    TagsWrite { path: PathBuf, source: io::Error },
    #[error(
        "keyring file {path} does not exist (create it holding a JSON array of base64 keys, \
         e.g. [\"<output of serf keygen>\"], or drop -keyring-file)"
    )]
    KeyringMissing { path: PathBuf },
    #[error("Failed to read keyring file {path}: {source}")]
    KeyringRead { path: PathBuf, source: io::Error },
    /// Never carries the file's text: serde's messages can quote it, and it is key material.
    #[error(
        "Failed to decode keyring file {path}: {why} (it must hold a JSON array of base64 \
         keys, primary first, e.g. [\"<output of vassal keygen>\"]; the file's contents are not \
         shown because they are secret)"
    )]
    KeyringDecode { path: PathBuf, why: String },
    /// Names the entry by its index, never its text.
    #[error(
        "Failed to decode key from keyring {path}: key {index} (counting from 0) is not base64: \
         {why} (replace it with the output of `vassal keygen`; the key is not shown because it \
         is secret)"
    )]
    KeyringKeyDecode {
        path: PathBuf,
        index: usize,
        why: String,
    },
    #[error("Keyring file contains no keys: {path} (add a base64 key, e.g. from `serf keygen`)")]
    KeyringEmpty { path: PathBuf },
    #[error("Failed to restore keyring from {path}: key {index}: {source} (try `serf keygen`)")]
    KeyringBadKey {
        path: PathBuf,
        index: usize,
        source: vassal_memberlist::wire::KeyringError,
    },
    #[error("Failed to write keyring file {path}: {source}")]
    KeyringWrite { path: PathBuf, source: io::Error },
}

/// The tags a tags file holds, or `None` if there is no such file yet (it is created on the
/// first tag change).
pub fn load_tags(path: &Path) -> Result<Option<BTreeMap<String, String>>, FileError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FileError::TagsRead {
                path: path.into(),
                source,
            })
        }
    };
    // Go decodes `null` into an empty map, like an empty object.
    let tags: Option<BTreeMap<String, String>> =
        serde_json::from_slice(&data).map_err(|source| FileError::TagsDecode {
            path: path.into(),
            source,
        })?;
    Ok(Some(tags.unwrap_or_default()))
}

/// Rewrites the tags file with `tags`.
pub fn write_tags(path: &Path, tags: &BTreeMap<String, String>) -> Result<(), FileError> {
    let json = serde_json::to_vec_pretty(tags).expect("string maps always serialize");
    write_private(path, &json).map_err(|source| FileError::TagsWrite {
        path: path.into(),
        source,
    })
}

/// The keyring a keyring file holds: its first key is the primary. The file must exist and
/// hold at least one valid key.
pub fn load_keyring(path: &Path) -> Result<Keyring, FileError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FileError::KeyringMissing { path: path.into() })
        }
        Err(source) => {
            return Err(FileError::KeyringRead {
                path: path.into(),
                source,
            })
        }
    };
    let keys = keyring_entries(&data).map_err(|why| FileError::KeyringDecode {
        path: path.into(),
        why,
    })?;
    let mut decoded = Vec::new();
    for (index, key) in keys.into_iter().enumerate() {
        let bytes =
            vassal_serf::keys::decode_base64(&key).map_err(|why| FileError::KeyringKeyDecode {
                path: path.into(),
                index,
                why,
            })?;
        decoded.push(bytes);
    }
    let bad = |index: usize| {
        move |source| FileError::KeyringBadKey {
            path: path.into(),
            index,
            source,
        }
    };
    let Some((primary, rest)) = decoded.split_first() else {
        return Err(FileError::KeyringEmpty { path: path.into() });
    };
    let mut ring = Keyring::new(primary).map_err(bad(0))?;
    for (i, key) in rest.iter().enumerate() {
        ring.add_key(key).map_err(bad(i + 1))?;
    }
    Ok(ring)
}

/// The strings of a keyring file's JSON array (`null` is an empty one, as in Go), or what is
/// wrong with its shape. The answer never quotes the file: serde's own type errors would
/// (`invalid type: string "…"`), and the text is key material. Syntax errors name a line and
/// column only.
fn keyring_entries(data: &[u8]) -> Result<Vec<String>, String> {
    use serde_json::Value;
    let value: Value = serde_json::from_slice(data).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Eof => "the file ends too early",
            _ => "a syntax error",
        };
        format!(
            "not valid JSON: {what} at line {} column {}",
            e.line(),
            e.column()
        )
    })?;
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(format!("it holds {}, not an array", kind(&other))),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::String(s) => Ok(s),
            other => Err(format!(
                "entry {index} (counting from 0) is {}, not a string",
                kind(&other)
            )),
        })
        .collect()
}

/// Rewrites the keyring file with `keys`, primary first.
pub fn write_keyring(path: &Path, keys: &[Vec<u8>]) -> Result<(), FileError> {
    let encoded: Vec<String> = keys
        .iter()
        .map(|k| base64::engine::general_purpose::STANDARD.encode(k))
        .collect();
    let json = serde_json::to_vec_pretty(&encoded).expect("strings always serialize");
    write_private(path, &json).map_err(|source| FileError::KeyringWrite {
        path: path.into(),
        source,
    })
}

/// Like Go's `ioutil.WriteFile(path, data, 0600)`, but whole or not at all: the data goes to
/// `PATH.tmp` (mode 0600), is synced, and is renamed over `PATH`, so a reader or a crash never
/// sees a half-written keyring.
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tags_round_trip_through_an_indented_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tags.json");
        assert_eq!(load_tags(&path).unwrap(), None, "no file yet");
        let tags = BTreeMap::from([
            ("role".to_string(), "web".to_string()),
            ("dc".into(), "eu".into()),
        ]);
        write_tags(&path, &tags).unwrap();
        // Go's json.MarshalIndent(tags, "", "  "): sorted keys, two spaces, no final newline.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"dc\": \"eu\",\n  \"role\": \"web\"\n}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_tags(&path).unwrap(), Some(tags));
    }

    #[test]
    fn a_tags_file_that_is_not_an_object_of_strings_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tags.json");
        std::fs::write(&path, r#"{"n": 1}"#).unwrap();
        let e = load_tags(&path).unwrap_err().to_string();
        assert!(
            e.contains("Failed to decode tags file") && e.contains("tags.json"),
            "{e}"
        );
    }

    #[test]
    fn keyring_file_loads_primary_first_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (a, b) = (vec![1u8; 16], vec![2u8; 32]);
        write_keyring(&path, &[a.clone(), b.clone()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "[\n  \"AQEBAQEBAQEBAQEBAQEBAQ==\",\n  \"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\"\n]"
        );
        let ring = load_keyring(&path).unwrap();
        assert_eq!(ring.primary(), &a[..]);
        assert_eq!(ring.keys(), &[a, b][..]);
    }

    #[test]
    fn keyring_file_must_exist_and_hold_valid_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let err = |p: &Path| load_keyring(p).unwrap_err().to_string();
        assert!(err(&path).contains("does not exist"), "{}", err(&path));
        std::fs::write(&path, "[]").unwrap();
        assert!(err(&path).contains("contains no keys"), "{}", err(&path));
        std::fs::write(&path, r#"["not base64!"]"#).unwrap();
        assert!(err(&path).contains("not base64"), "{}", err(&path));
        std::fs::write(&path, r#"["aGVsbG8="]"#).unwrap();
        assert!(err(&path).contains("16, 24 or 32"), "{}", err(&path));
        std::fs::write(&path, "{").unwrap();
        assert!(
            err(&path).contains("Failed to decode keyring file"),
            "{}",
            err(&path)
        );
    }

    #[test]
    fn keyring_errors_name_the_entry_but_never_echo_key_material() {
        // Issue 11: a mistyped keyring file must not put key text into the log.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let secret = "SECRETSECRETSECRETSECRET";
        let err = |text: &str| {
            std::fs::write(&path, text).unwrap();
            load_keyring(&path).unwrap_err().to_string()
        };
        for (text, says) in [
            // A bare string instead of an array: serde's own message would quote it.
            (format!("\"{secret}\""), "holds a string, not an array"),
            (format!("{{\"k\": \"{secret}\"}}"), "holds an object"),
            (
                format!("[\"AAAAAAAAAAAAAAAAAAAAAA==\", 7, \"{secret}\"]"),
                "entry 1",
            ),
            (
                format!("[\"AAAAAAAAAAAAAAAAAAAAAA==\", \"{secret}!\"]"),
                "key 1",
            ),
            (format!("[\"{secret}"), "the file ends too early"),
            (format!("[\"{secret}\" \"x\"]"), "a syntax error at line 1"),
        ] {
            let e = err(&text);
            assert!(e.contains(says), "{text}: {e}");
            assert!(
                !e.contains("SECRET"),
                "{text}: the message echoes the key: {e}"
            );
        }
    }
}
