//! One template as the user gave it: `-template SRC:DEST[:COMMAND]`, or a config file's
//! `{"source": …, "destination": …, "command": …, "command_timeout": "30s"}`.

use std::path::PathBuf;
use std::time::Duration;

use super::DEFAULT_COMMAND_TIMEOUT;

/// What to render, where to, and what to run after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// The Jinja template, read once at start.
    pub source: PathBuf,
    /// The file written (atomically) when the rendered text changes.
    pub destination: PathBuf,
    /// Run through `/bin/sh -c` after DEST changed (and again after a failure, at the next
    /// change).
    pub command: Option<String>,
    /// The command is killed with its process group after this; `None` for no limit.
    pub command_timeout: Option<Duration>,
}

const FORM: &str = "expected SRC:DEST[:COMMAND], e.g. \
                    upstream.tmpl:/etc/nginx/conf.d/upstream.conf:'nginx -s reload'";

impl TemplateSpec {
    /// `SRC:DEST[:COMMAND]`: the first two colons split; the command may hold more.
    pub fn parse(s: &str) -> Result<TemplateSpec, String> {
        let mut parts = s.splitn(3, ':');
        let source = parts.next().unwrap_or_default().trim();
        let destination = parts.next().map(str::trim).unwrap_or_default();
        let command = parts.next().map(str::trim).filter(|c| !c.is_empty());
        if source.is_empty() || destination.is_empty() {
            return Err(FORM.into());
        }
        Ok(TemplateSpec {
            source: source.into(),
            destination: destination.into(),
            command: command.map(str::to_owned),
            command_timeout: Some(DEFAULT_COMMAND_TIMEOUT),
        })
    }

    /// The config file's object form; `key` names the key in errors.
    pub fn from_json(v: &serde_json::Value) -> Result<TemplateSpec, String> {
        use serde_json::Value;
        let map = match v {
            Value::String(s) => return TemplateSpec::parse(s),
            Value::Object(m) => m,
            _ => {
                return Err(
                    "each template is \"SRC:DEST[:COMMAND]\" or {\"source\": …, \
                     \"destination\": …, \"command\": …, \"command_timeout\": \"30s\"}"
                        .into(),
                )
            }
        };
        let mut spec = TemplateSpec {
            source: PathBuf::new(),
            destination: PathBuf::new(),
            command: None,
            command_timeout: Some(DEFAULT_COMMAND_TIMEOUT),
        };
        for (k, v) in map {
            let text = || -> Result<&str, String> {
                v.as_str()
                    .ok_or_else(|| format!("template key {k:?} must be a string; quote it"))
            };
            match k.as_str() {
                "source" => spec.source = text()?.into(),
                "destination" => spec.destination = text()?.into(),
                "command" => spec.command = Some(text()?.to_owned()).filter(|c| !c.is_empty()),
                "command_timeout" => {
                    let t = text()?;
                    let d = crate::parse::parse_duration(t).map_err(|e| {
                        format!(
                            "template command_timeout {t:?}: {e} (e.g. \"30s\"; \"0\" for none)"
                        )
                    })?;
                    spec.command_timeout = Some(d).filter(|d| !d.is_zero());
                }
                other => {
                    return Err(format!(
                        "unknown template key {other:?} (known: source, destination, command, \
                         command_timeout)"
                    ))
                }
            }
        }
        if spec.source.as_os_str().is_empty() || spec.destination.as_os_str().is_empty() {
            return Err("a template needs both \"source\" and \"destination\"".into());
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_form_splits_at_the_first_two_colons() {
        let s = TemplateSpec::parse("a.tmpl:/etc/x.conf:nginx -s reload -g 'a:b'").unwrap();
        assert_eq!(s.source, PathBuf::from("a.tmpl"));
        assert_eq!(s.destination, PathBuf::from("/etc/x.conf"));
        assert_eq!(s.command.as_deref(), Some("nginx -s reload -g 'a:b'"));
        assert_eq!(s.command_timeout, Some(DEFAULT_COMMAND_TIMEOUT));
        let s = TemplateSpec::parse("a.tmpl:out").unwrap();
        assert_eq!(s.command, None);
        for bad in ["a.tmpl", ":out", "a.tmpl:", ""] {
            let e = TemplateSpec::parse(bad).unwrap_err();
            assert!(e.contains("SRC:DEST[:COMMAND]"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_config_form_takes_a_string_or_an_object() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"source": "a.tmpl", "destination": "b", "command": "true", "command_timeout": "5s"}"#,
        )
        .unwrap();
        let s = TemplateSpec::from_json(&v).unwrap();
        assert_eq!(s.command.as_deref(), Some("true"));
        assert_eq!(s.command_timeout, Some(Duration::from_secs(5)));
        let v = serde_json::json!("a.tmpl:b");
        assert_eq!(
            TemplateSpec::from_json(&v).unwrap().destination,
            PathBuf::from("b")
        );
        for (bad, needle) in [
            (serde_json::json!({"source": "a"}), "both"),
            (
                serde_json::json!({"source": "a", "dest": "b"}),
                "unknown template key",
            ),
            (
                serde_json::json!({"source": 1, "destination": "b"}),
                "quote it",
            ),
            (
                serde_json::json!({"source": "a", "destination": "b", "command_timeout": "x"}),
                "command_timeout",
            ),
            (serde_json::json!(3), "SRC:DEST"),
        ] {
            let e = TemplateSpec::from_json(&bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
