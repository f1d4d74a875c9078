//! The template engine, pure: `minijinja` set up for config files (no HTML escaping,
//! `trim_blocks` and `lstrip_blocks`, the trailing newline kept, undefined values an error when
//! printed), the helper filters, the start-time checks, the context and a bounded render.
//!
//! Gossiped names and tags are data from the network, so a render is bounded whatever they
//! hold: fuel ([`FUEL`] instructions), recursion ([`RECURSION_LIMIT`]) and output size
//! ([`MAX_OUTPUT`]) each end it with an error, and the previous DEST stays.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;

use minijinja::machinery::{self, Instruction, WhitespaceConfig};
use minijinja::value::Rest;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;
use vassal_serf::{Member, MemberStatus};

use super::TemplateSpec;

/// Instructions one render may execute: a few hundred per member in a loop over thousands of
/// members, yet a runaway loop ends in well under a second.
pub const FUEL: u64 = 5_000_000;
/// Nested macro calls and includes at most.
pub const RECURSION_LIMIT: usize = 64;
/// A rendered file larger than this is refused (the previous DEST stays).
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;
/// A template file larger than this is refused at start.
pub const MAX_SOURCE: u64 = 1024 * 1024;

/// The variables a template is given.
const CONTEXT_NAMES: &[&str] = &["members", "self"];

/// Our helper filters, with a line each for the hint and the README.
const HELPERS: &[&str] = &["alive", "with_status", "with_tag", "without_tag"];

/// minijinja's built-in filters and tests the hints may suggest (only those the engine really
/// has are suggested).
const COMMON: &[&str] = &[
    "selectattr",
    "rejectattr",
    "select",
    "reject",
    "map",
    "sort",
    "join",
    "default",
    "length",
    "first",
    "last",
    "unique",
    "groupby",
    "lower",
    "upper",
    "replace",
    "trim",
    "int",
    "string",
    "tojson",
    "items",
    "list",
    "defined",
    "undefined",
    "none",
    "equalto",
    "eq",
    "ne",
    "in",
    "startingwith",
    "endingwith",
];

/// One member as a template sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub name: String,
    /// The IP alone, as text (`10.0.0.5`, `fe80::1`).
    pub addr: String,
    /// The gossip port.
    pub port: u16,
    /// Serf's word: `alive`, `leaving`, `left`, `failed`.
    pub status: &'static str,
    pub tags: BTreeMap<String, String>,
}

impl MemberView {
    fn new(m: &Member) -> MemberView {
        MemberView {
            name: m.name.clone(),
            addr: m.addr.to_canonical().to_string(),
            port: m.port,
            status: m.status.as_str(),
            tags: m.tags.clone(),
        }
    }
}

/// The whole context: every member Serf knows (by name), and the local one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct View {
    pub members: Vec<MemberView>,
    #[serde(rename = "self")]
    pub me: Option<MemberView>,
}

impl View {
    /// The context from the node's member list; `local` is this agent's node name.
    pub fn new(members: &[Member], local: &str) -> View {
        let mut list: Vec<MemberView> = members.iter().map(MemberView::new).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        let me = list.iter().find(|m| m.name == local).cloned();
        View { members: list, me }
    }
}

/// Whether this agent has company: some other member alive. Until then nothing renders.
pub fn joined(members: &[Member], local: &str) -> bool {
    members
        .iter()
        .any(|m| m.name != local && m.status == MemberStatus::Alive)
}

/// Why a template was refused at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub source: PathBuf,
    pub line: Option<usize>,
    /// What is wrong.
    pub problem: String,
    /// The offending line of the template, when known.
    pub snippet: Option<String>,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template {}", self.source.display())?;
        if let Some(l) = self.line {
            write!(f, ", line {l}")?;
        }
        write!(f, ": {}", self.problem)?;
        if let (Some(l), Some(s)) = (self.line, &self.snippet) {
            write!(f, "\n    {l:>4} | {s}")?;
        }
        write!(f, "\n    hint: {}", self.hint)
    }
}

impl std::error::Error for TemplateError {}

/// Why one render failed; the previous DEST stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    pub line: Option<usize>,
    pub problem: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

/// Every template, compiled into one environment with the limits and helpers.
pub struct Engine {
    env: Environment<'static>,
    /// The templates by the name they are registered under (their index).
    names: Vec<String>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("templates", &self.names)
            .finish()
    }
}

/// The environment with our settings and helpers, before any template is added.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.add_filter("alive", |members: Value| -> Result<Value, Error> {
        filter_members(&members, |m| {
            attr_str(m, "status").as_deref() == Some("alive")
        })
    });
    env.add_filter(
        "with_status",
        |members: Value, statuses: Rest<String>| -> Result<Value, Error> {
            filter_members(&members, |m| {
                attr_str(m, "status").is_some_and(|s| statuses.contains(&s))
            })
        },
    );
    env.add_filter(
        "with_tag",
        |members: Value, key: String, value: Option<String>| -> Result<Value, Error> {
            filter_members(&members, |m| tag_matches(m, &key, value.as_deref()))
        },
    );
    env.add_filter(
        "without_tag",
        |members: Value, key: String, value: Option<String>| -> Result<Value, Error> {
            filter_members(&members, |m| !tag_matches(m, &key, value.as_deref()))
        },
    );
    env
}

fn attr_str(m: &Value, name: &str) -> Option<String> {
    m.get_attr(name)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// Whether member `m` has tag `key` (equal to `value` when one is given).
fn tag_matches(m: &Value, key: &str, value: Option<&str>) -> bool {
    let Ok(tags) = m.get_attr("tags") else {
        return false;
    };
    match tags.get_item(&Value::from(key)) {
        Ok(v) if !v.is_undefined() && !v.is_none() => match value {
            None => true,
            Some(want) => v.as_str() == Some(want),
        },
        _ => false,
    }
}

/// The members of a list that `keep` keeps, in order.
fn filter_members(members: &Value, keep: impl Fn(&Value) -> bool) -> Result<Value, Error> {
    let iter = members.try_iter().map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("expected a list of members, got {}", members.kind()),
        )
    })?;
    Ok(Value::from(iter.filter(|m| keep(m)).collect::<Vec<_>>()))
}

impl Engine {
    /// Reads and checks every template: a syntax error, an unknown filter or test, or a
    /// variable the context does not have is refused with the file, the line and a hint.
    pub fn load(specs: &[TemplateSpec]) -> Result<Engine, TemplateError> {
        let mut env = environment();
        let mut names = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let source = read_source(spec)?;
            let name = i.to_string();
            check(&env, spec, &name, &source)?;
            env.add_template_owned(name.clone(), source.clone())
                .map_err(|e| refusal(spec, &source, &e))?;
            let t = env
                .get_template(&name)
                .map_err(|e| refusal(spec, &source, &e))?;
            let mut unknown: Vec<String> = t
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| {
                    !CONTEXT_NAMES.contains(&v.as_str()) && env.globals().all(|(g, _)| g != v)
                })
                .collect();
            unknown.sort();
            if let Some(v) = unknown.first() {
                let line = first_line_of(&source, v);
                return Err(TemplateError {
                    source: spec.source.clone(),
                    line,
                    problem: format!("unknown variable {v:?}"),
                    snippet: line.and_then(|l| line_text(&source, l)),
                    hint: format!(
                        "the context has `members` (a list of {{name, addr, port, status, \
                         tags}}) and `self` (this node){}",
                        suggest(v, CONTEXT_NAMES.iter().copied())
                    ),
                });
            }
            names.push(name);
        }
        Ok(Engine { env, names })
    }

    /// Renders template `index` over `view`, bounded by fuel, recursion and [`MAX_OUTPUT`].
    pub fn render(&self, index: usize, view: &View) -> Result<String, RenderError> {
        let name = self.names.get(index).ok_or_else(|| RenderError {
            line: None,
            problem: format!("no template {index}"),
        })?;
        let t = self.env.get_template(name).map_err(|e| render_error(&e))?;
        let mut out = Bounded {
            buf: Vec::new(),
            limit: MAX_OUTPUT,
        };
        match t.render_captured_to(view, &mut out) {
            Ok(_) => String::from_utf8(out.buf).map_err(|_| RenderError {
                line: None,
                problem: "the output is not UTF-8".into(),
            }),
            Err(e) if out.buf.len() >= MAX_OUTPUT => Err(RenderError {
                line: e.line(),
                problem: format!("the output passed {MAX_OUTPUT} bytes, the limit"),
            }),
            Err(e) => Err(render_error(&e)),
        }
    }
}

/// A writer that refuses to grow past `limit`.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
}

impl io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(b.len()) > self.limit {
            self.buf.extend_from_slice(
                b.get(..self.limit.saturating_sub(self.buf.len()))
                    .unwrap_or_default(),
            );
            return Err(io::Error::other("output too large"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn render_error(e: &Error) -> RenderError {
    let problem = match (e.kind(), e.detail()) {
        (ErrorKind::OutOfFuel, _) => format!(
            "the template ran past {FUEL} instructions, the limit (a loop that never ends, or \
             nested loops over a large cluster?)"
        ),
        (_, Some(d)) => format!("{}: {d}", e.kind()),
        (_, None) => e.kind().to_string(),
    };
    RenderError {
        line: e.line(),
        problem,
    }
}

fn read_source(spec: &TemplateSpec) -> Result<String, TemplateError> {
    let fail = |problem: String, hint: &str| TemplateError {
        source: spec.source.clone(),
        line: None,
        problem,
        snippet: None,
        hint: hint.into(),
    };
    let meta = std::fs::metadata(&spec.source).map_err(|e| {
        fail(
            format!("cannot read it: {e}"),
            "give the template's path (relative to the agent's working directory, or absolute)",
        )
    })?;
    if meta.len() > MAX_SOURCE {
        return Err(fail(
            format!("{} bytes; templates are at most {MAX_SOURCE}", meta.len()),
            "split it, or render less",
        ));
    }
    let source = std::fs::read_to_string(&spec.source).map_err(|e| {
        fail(
            format!("cannot read it: {e}"),
            "templates are UTF-8 text files",
        )
    })?;
    let dir = match spec.destination.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(TemplateError {
            source: spec.source.clone(),
            line: None,
            problem: format!(
                "its destination's directory {} does not exist",
                dir.display()
            ),
            snippet: None,
            hint: "create the directory, or give another destination".into(),
        });
    }
    Ok(source)
}

/// A minijinja error at start, as a refusal with the line and a hint.
fn refusal(spec: &TemplateSpec, source: &str, e: &Error) -> TemplateError {
    let hint = match e.kind() {
        ErrorKind::SyntaxError => "check the tags on that line: `{{ expression }}`, \
             `{% for m in members %}…{% endfor %}`, `{% if … %}…{% endif %}`; every block needs \
             its end tag"
            .to_owned(),
        _ => "see the template section of the README".to_owned(),
    };
    TemplateError {
        source: spec.source.clone(),
        line: e.line(),
        problem: match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        },
        snippet: e.line().and_then(|l| line_text(source, l)),
        hint,
    }
}

/// Finds filters and tests the environment does not have, by compiling the template and
/// looking up every name its instructions apply: minijinja only finds them when it runs.
fn check(
    env: &Environment<'static>,
    spec: &TemplateSpec,
    name: &str,
    source: &str,
) -> Result<(), TemplateError> {
    let ws = WhitespaceConfig {
        keep_trailing_newline: true,
        lstrip_blocks: true,
        trim_blocks: true,
    };
    let ast = machinery::parse(source, name, Default::default(), ws)
        .map_err(|e| refusal(spec, source, &e))?;
    let mut g = machinery::CodeGenerator::new(name, source);
    g.compile_stmt(&ast);
    let (instructions, blocks) = g.finish();
    for ins in std::iter::once(&instructions).chain(blocks.values()) {
        for idx in 0..ins.len() {
            let Ok(idx) = u32::try_from(idx) else { break };
            let (kind, name) = match ins.get(idx) {
                Some(Instruction::ApplyFilter(n, _, _)) => ("filter", *n),
                Some(Instruction::PerformTest(n, _, _)) => ("test", *n),
                _ => continue,
            };
            if known(env, kind, name) {
                continue;
            }
            let line = ins.get_line(idx);
            let candidates = HELPERS
                .iter()
                .chain(COMMON)
                .copied()
                .filter(|c| known(env, kind, c));
            return Err(TemplateError {
                source: spec.source.clone(),
                line,
                problem: format!("unknown {kind} {name:?}"),
                snippet: line.and_then(|l| line_text(source, l)),
                hint: format!(
                    "vassal's filters are alive, with_status(\"alive\", …), with_tag(\"key\"[, \
                     \"value\"]) and without_tag(…); minijinja's built-in filters and tests \
                     (selectattr, sort, join, default, …) work too{}",
                    suggest(name, candidates)
                ),
            });
        }
    }
    Ok(())
}

/// Whether the environment has filter or test `name`: an expression applying it fails with
/// something other than "unknown".
fn known(env: &Environment<'static>, kind: &str, name: &str) -> bool {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return false;
    }
    let expr = match kind {
        "filter" => format!("none | {name}"),
        _ => format!("none is {name}"),
    };
    match env.compile_expression_owned(expr) {
        Ok(e) => match e.eval(()) {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), ErrorKind::UnknownFilter | ErrorKind::UnknownTest),
        },
        Err(_) => false,
    }
}

/// `; did you mean "x"?` when a candidate is within two edits.
fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| format!("; did you mean {c:?}?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i.saturating_add(1)];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev
                .get(j)
                .copied()
                .unwrap_or(0)
                .saturating_add(usize::from(ca != *cb));
            let del = prev
                .get(j.saturating_add(1))
                .copied()
                .unwrap_or(0)
                .saturating_add(1);
            let ins = cur.get(j).copied().unwrap_or(0).saturating_add(1);
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// Line `n` (from 1) of `source`, trimmed at the end.
fn line_text(source: &str, n: usize) -> Option<String> {
    source
        .lines()
        .nth(n.checked_sub(1)?)
        .map(|l| l.trim_end().to_owned())
}

/// The first line mentioning `word` as a whole word.
fn first_line_of(source: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    source
        .lines()
        .position(|l| {
            l.match_indices(word).any(|(i, _)| {
                let before = l.get(..i).and_then(|s| s.chars().next_back());
                let after = l
                    .get(i.saturating_add(word.len())..)
                    .and_then(|s| s.chars().next());
                !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
            })
        })
        .map(|i| i.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::path::Path;

    fn member(name: &str, ip: &str, status: MemberStatus, tags: &[(&str, &str)]) -> Member {
        Member {
            name: name.into(),
            addr: ip.parse::<IpAddr>().unwrap(),
            port: 7946,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            status,
            vsn: Default::default(),
        }
    }

    fn cluster() -> Vec<Member> {
        vec![
            member("lb", "10.0.0.1", MemberStatus::Alive, &[("role", "lb")]),
            member(
                "web-2",
                "10.0.0.3",
                MemberStatus::Failed,
                &[("role", "web"), ("http_port", "8080")],
            ),
            member(
                "web-1",
                "10.0.0.2",
                MemberStatus::Alive,
                &[("role", "web"), ("http_port", "8080")],
            ),
            member(
                "web-3",
                "::ffff:10.0.0.4",
                MemberStatus::Leaving,
                &[("role", "web"), ("http_port", "8081")],
            ),
        ]
    }

    /// An engine over one template with `text`, in a temp dir; the dir is kept alive.
    fn engine(text: &str) -> (Result<Engine, TemplateError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("t.tmpl");
        std::fs::write(&src, text).unwrap();
        let spec = TemplateSpec {
            source: src,
            destination: dir.path().join("out"),
            command: None,
            command_timeout: None,
        };
        (Engine::load(&[spec]), dir)
    }

    fn render(text: &str) -> Result<String, RenderError> {
        let (e, _dir) = engine(text);
        e.unwrap().render(0, &View::new(&cluster(), "lb"))
    }

    #[test]
    fn members_are_sorted_and_carry_serfs_words() {
        let out = render(
            "{% for m in members %}{{ m.name }} {{ m.addr }}:{{ m.port }} {{ m.status }}\n\
             {% endfor %}self={{ self.name }} {{ self.tags.role }}\n",
        )
        .unwrap();
        assert_eq!(
            out,
            "lb 10.0.0.1:7946 alive\nweb-1 10.0.0.2:7946 alive\nweb-2 10.0.0.3:7946 failed\n\
             web-3 10.0.0.4:7946 leaving\nself=lb lb\n"
        );
    }

    #[test]
    fn the_helpers_filter_by_tag_and_status() {
        let out = render(
            "upstream web {\n\
             {% for m in members|with_tag(\"role\", \"web\")|alive %}\n\
             \x20   server {{ m.addr }}:{{ m.tags.http_port }};\n\
             {% endfor %}\n\
             }\n\
             {{ members|with_status(\"failed\", \"leaving\")|map(attribute=\"name\")|join(\",\") }}\n\
             {{ members|without_tag(\"role\", \"web\")|map(attribute=\"name\")|join(\",\") }}\n\
             {{ members|selectattr(\"status\", \"equalto\", \"alive\")|list|length }}\n\
             {{ members|with_tag(\"http_port\")|length }}\n",
        )
        .unwrap();
        assert_eq!(
            out,
            "upstream web {\n    server 10.0.0.2:8080;\n}\nweb-2,web-3\nlb\n2\n3\n"
        );
    }

    #[test]
    fn a_syntax_error_is_refused_with_its_line_and_a_hint() {
        let (e, _d) = engine("upstream {\n{% for m in members %}\n  server {{ m.addr };\n");
        let e = e.unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("t.tmpl, line 3: syntax error"), "{msg}");
        assert!(msg.contains("server {{ m.addr };"), "{msg}");
        assert!(msg.contains("hint:"), "{msg}");
    }

    #[test]
    fn an_unknown_filter_or_test_is_refused_at_start_even_inside_a_loop() {
        let (e, _d) =
            engine("a\n{% for m in members %}\n{{ m.name|with_tags(\"x\") }}\n{% endfor %}\n");
        let msg = e.unwrap_err().to_string();
        assert!(
            msg.contains("line 3: unknown filter \"with_tags\""),
            "{msg}"
        );
        assert!(msg.contains("did you mean \"with_tag\""), "{msg}");
        let (e, _d) = engine("{% if self is definedd %}x{% endif %}");
        let msg = e.unwrap_err().to_string();
        assert!(msg.contains("unknown test \"definedd\""), "{msg}");
        assert!(msg.contains("did you mean \"defined\""), "{msg}");
    }

    #[test]
    fn an_unknown_variable_is_refused_with_the_context_names() {
        let (e, _d) = engine("x\n{% for m in memebers %}{{ m }}{% endfor %}");
        let msg = e.unwrap_err().to_string();
        assert!(
            msg.contains("line 2: unknown variable \"memebers\""),
            "{msg}"
        );
        assert!(msg.contains("did you mean \"members\""), "{msg}");
        // Loop variables, sets and macros are declared, not unknown.
        let (e, _d) = engine(
            "{% set n = 1 %}{% macro s(m) %}{{ m.name }}{% endmacro %}\
             {% for m in members %}{{ s(m) }}{{ n }}{{ loop.index }}{% endfor %}{{ range(2)|list }}",
        );
        e.unwrap();
    }

    #[test]
    fn a_missing_source_or_destination_directory_is_refused() {
        let spec = TemplateSpec::parse("/nonexistent/t.tmpl:/tmp/out").unwrap();
        let msg = Engine::load(&[spec]).unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/t.tmpl: cannot read it"), "{msg}");
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("t");
        std::fs::write(&src, "x").unwrap();
        let spec = TemplateSpec::parse(&format!("{}:/nonexistent/dir/out", src.display())).unwrap();
        let msg = Engine::load(&[spec]).unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/dir does not exist"), "{msg}");
    }

    #[test]
    fn printing_an_undefined_tag_fails_the_render_but_testing_it_does_not() {
        let e = render("{% for m in members %}{{ m.tags.nope }}{% endfor %}").unwrap_err();
        assert!(e.to_string().contains("undefined"), "{e}");
        let out = render(
            "{% for m in members %}{% if m.tags.http_port %}{{ m.name }} {% endif %}{% endfor %}\
             {{ self.tags.nope|default(\"-\") }}",
        )
        .unwrap();
        assert_eq!(out, "web-1 web-2 web-3 -");
    }

    #[test]
    fn a_runaway_template_is_stopped_by_fuel_output_or_recursion_limits() {
        // Issue 15: gossiped data must not make a render run away.
        let e = render(
            "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
        )
        .unwrap_err();
        assert!(e.problem.contains("instructions, the limit"), "{e}");
        let e = render("{% for a in range(100000) %}{{ \"x\" * 100 }}{% endfor %}").unwrap_err();
        assert!(e.problem.contains("bytes, the limit"), "{e}");
        let e = render("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}").unwrap_err();
        assert!(!e.problem.is_empty(), "{e}");
    }

    #[test]
    fn hostile_tags_are_data() {
        let mut c = cluster();
        c.push(member(
            "evil",
            "10.0.0.9",
            MemberStatus::Alive,
            &[("role", "web"), ("http_port", "{{ 7 * 7 }}\n}")],
        ));
        let (e, _d) = engine("{% for m in members|with_tag(\"role\",\"web\")|alive %}{{ m.tags.http_port }};{% endfor %}");
        let out = e.unwrap().render(0, &View::new(&c, "lb")).unwrap();
        assert_eq!(out, "{{ 7 * 7 }}\n};8080;");
    }

    #[test]
    fn the_shipped_nginx_template_lists_alive_web_members() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/templates/nginx-upstream.conf.j2");
        let dir = tempfile::tempdir().unwrap();
        let spec = TemplateSpec {
            source: src,
            destination: dir.path().join("up.conf"),
            command: None,
            command_timeout: None,
        };
        let e = Engine::load(&[spec]).unwrap();
        let out = e.render(0, &View::new(&cluster(), "lb")).unwrap();
        assert_eq!(
            out,
            "# Rendered by vassal (template mode) from nginx-upstream.conf.j2; edits are \
             overwritten.\nupstream vassal_web {\n    server 10.0.0.2:8080 max_fails=1 \
             fail_timeout=5s;  # web-1\n}\n"
        );
        let alone = vec![member("lb", "10.0.0.1", MemberStatus::Alive, &[])];
        let out = e.render(0, &View::new(&alone, "lb")).unwrap();
        assert!(out.contains("    server 127.0.0.1:1 down;\n}\n"), "{out}");
    }

    #[test]
    fn joined_means_another_member_is_alive() {
        let alone = vec![member("lb", "10.0.0.1", MemberStatus::Alive, &[])];
        assert!(!joined(&alone, "lb"));
        let mut c = alone.clone();
        c.push(member("x", "10.0.0.2", MemberStatus::Failed, &[]));
        assert!(!joined(&c, "lb"));
        assert!(joined(&cluster(), "lb"));
    }
}
