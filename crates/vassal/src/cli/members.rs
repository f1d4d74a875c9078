//! `vassal members`: the member list, filtered by anchored regular expressions.

use std::net::SocketAddr;
use std::process::ExitCode;

use vassal_rpc::protocol::{Member, MembersFilter};

use super::output::{columnize, Json};
use crate::flags::{FlagSet, Kind};

const SUMMARY: &str = "Outputs the members of a running Serf agent.";

fn flags() -> FlagSet {
    super::with_rpc(
        FlagSet::new("members")
            .flag(
                "detailed",
                Kind::Bool,
                "",
                "Show protocol versions too (text format)",
            )
            .flag(
                "format",
                Kind::Value,
                "text|json",
                "Output format (default text)",
            )
            .flag(
                "name",
                Kind::Value,
                "<regexp>",
                "Only members whose name matches",
            )
            .flag(
                "role",
                Kind::Value,
                "<regexp>",
                "Deprecated: same as -tag role=<regexp>",
            )
            .flag(
                "status",
                Kind::Value,
                "<regexp>",
                "Only members whose status matches",
            )
            .flag(
                "tag",
                Kind::Multi,
                "<key>=<regexp>",
                "Only members whose tag matches; repeatable",
            ),
    )
}

pub async fn run(args: &[String]) -> ExitCode {
    let set = flags();
    let p = match super::parse(&set, args, SUMMARY) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut tags: Vec<String> = p.values("tag").to_vec();
    if let Some(role) = p.value("role").filter(|r| !r.is_empty()) {
        println!("Deprecation warning: 'Role' has been replaced with 'Tags'");
        tags.push(format!("role={role}"));
    }
    let tags = match super::parse_tags(&tags) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match super::connect(&p).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let filter = MembersFilter {
        tags,
        status: p.value("status").unwrap_or("").to_owned(),
        name: p.value("name").unwrap_or("").to_owned(),
    };
    let members = match client.members_filtered(&filter).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("Error retrieving members: {e}");
            return ExitCode::FAILURE;
        }
    };
    match format(
        &members,
        p.value("format").unwrap_or("text"),
        p.bool("detailed"),
    ) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Encoding error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serf's text table or JSON document.
pub fn format(members: &[Member], format: &str, detailed: bool) -> Result<String, String> {
    let addr = |m: &Member| SocketAddr::new(m.addr, m.port).to_string();
    match format {
        "text" => {
            let lines: Vec<String> = members
                .iter()
                .map(|m| {
                    let tags: Vec<String> =
                        m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let mut line =
                        format!("{}|{}|{}|{}", m.name, addr(m), m.status, tags.join(","));
                    if detailed {
                        line.push_str(&format!(
                            "|Protocol Version: {}|Available Protocol Range: [{}, {}]",
                            m.delegate_cur, m.delegate_min, m.delegate_max
                        ));
                    }
                    line
                })
                .collect();
            Ok(columnize(&lines).trim().to_owned())
        }
        "json" => {
            let list = members
                .iter()
                .map(|m| {
                    Json::Object(vec![
                        ("name".into(), Json::str(&m.name)),
                        ("addr".into(), Json::Str(addr(m))),
                        ("port".into(), Json::Int(m.port.into())),
                        ("tags".into(), Json::map(&m.tags, |v| Json::str(v))),
                        ("status".into(), Json::str(m.status.as_str())),
                        (
                            "protocol".into(),
                            Json::Object(vec![
                                ("max".into(), Json::Int(m.delegate_max.into())),
                                ("min".into(), Json::Int(m.delegate_min.into())),
                                ("version".into(), Json::Int(m.delegate_cur.into())),
                            ]),
                        ),
                    ])
                })
                .collect::<Vec<_>>();
            // Go marshals an empty (nil) list as null.
            let list = if list.is_empty() {
                Json::Null
            } else {
                Json::Array(list)
            };
            Ok(Json::Object(vec![("members".into(), list)]).pretty())
        }
        other => Err(format!("Invalid output format \"{other}\"")),
    }
}
