//! The files under `deploy/` that cannot run here for real (CloudFormation, systemd on a host,
//! the install script's `systemctl` step) are checked as far as tools on this machine allow:
//! cfn-lint on the template, the template's shape (Serf's demo: a web-node count, the LB at
//! 10.0.0.5, its address in the outputs), shellcheck on every script (ours in scripts/ and .ci/
//! too) including the instances' user data, `systemd-analyze verify` on the unit, and `install.sh` into a scratch root.
//!
//! cfn-lint comes from `scripts/setup` (a venv at `$CFN_LINT_VENV`, default
//! /opt/vassal-tools/cfn-lint); shellcheck and systemd-analyze from Debian. A missing tool fails
//! the test with the command that installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy(file: &str) -> PathBuf {
    repo().join("deploy").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn cfn_lint_venv() -> PathBuf {
    std::env::var_os("CFN_LINT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/vassal-tools/cfn-lint"))
}

/// Runs `cmd`, panicking with `hint` if the program is missing.
fn run(cmd: &mut Command, hint: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}; {hint}"))
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The template as JSON, decoded by cfn-lint's own YAML loader (which knows `!Ref` and friends).
fn template() -> Value {
    let py = cfn_lint_venv().join("bin/python");
    let out = run(
        Command::new(&py)
            .arg("-c")
            .arg(
                "import json, sys\n\
                 from cfnlint.decode import decode\n\
                 t, errors = decode(sys.argv[1])\n\
                 if errors: sys.exit('\\n'.join(str(e) for e in errors))\n\
                 print(json.dumps(t))",
            )
            .arg(deploy("cloudformation.yaml")),
        "install cfn-lint with scripts/setup",
    );
    assert!(
        out.status.success(),
        "decoding deploy/cloudformation.yaml failed:\n{}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cfn-lint's decoder prints JSON")
}

/// The user data script of a launch template, as the instance would get it (the `!Sub`
/// parameters left as `${Name}`).
fn user_data(t: &Value, launch_template: &str) -> String {
    let data = &t["Resources"][launch_template]["Properties"]["LaunchTemplateData"]["UserData"];
    data["Fn::Base64"]["Fn::Sub"]
        .as_str()
        .unwrap_or_else(|| {
            panic!("{launch_template}'s UserData is not Fn::Base64 of a !Sub string: {data}")
        })
        .to_owned()
}

/// The text between `<<'TAG'` and the line `TAG` in a shell script.
fn heredoc(script: &str, tag: &str) -> String {
    let start = format!("<<'{tag}'\n");
    let from = script
        .find(&start)
        .unwrap_or_else(|| panic!("no <<'{tag}' heredoc in:\n{script}"))
        + start.len();
    let len = script[from..]
        .find(&format!("\n{tag}\n"))
        .unwrap_or_else(|| panic!("heredoc {tag} never ends"));
    script[from..from + len + 1].to_owned()
}

#[test]
fn cloudformation_template_passes_cfn_lint() {
    let lint = cfn_lint_venv().join("bin/cfn-lint");
    let out = run(
        Command::new(&lint).arg(deploy("cloudformation.yaml")),
        "install it with scripts/setup (a venv at $CFN_LINT_VENV, default /opt/vassal-tools/cfn-lint)",
    );
    assert!(
        out.status.success(),
        "cfn-lint deploy/cloudformation.yaml:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn cloudformation_keeps_the_demo_shape() {
    let t = template();
    let params = &t["Parameters"];
    assert_eq!(
        params["WebNodes"]["Type"], "Number",
        "a web-node count parameter"
    );
    let group = &t["Resources"]["WebGroup"]["Properties"];
    for key in ["DesiredCapacity", "MinSize", "MaxSize"] {
        assert_eq!(
            group[key],
            serde_json::json!({"Ref": "WebNodes"}),
            "WebGroup {key}"
        );
    }
    assert_eq!(
        t["Resources"]["LoadBalancer"]["Properties"]["PrivateIpAddress"], "10.0.0.5",
        "the LB at the demo's static private address"
    );
    assert_eq!(
        t["Outputs"]["LoadBalancerIP"]["Value"],
        serde_json::json!({"Ref": "LoadBalancerIP"}),
        "the LB's public address in the outputs"
    );
    assert_eq!(
        t["Outputs"]["LoadBalancerPrivateIP"]["Value"],
        serde_json::json!({"Fn::GetAtt": ["LoadBalancer", "PrivateIp"]})
    );
    // A current image at every launch, not a hard-coded AMI id.
    assert_eq!(
        params["ImageId"]["Type"],
        "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    );
    assert!(
        params["VassalUrl"].is_object(),
        "the binary's URL is a parameter"
    );

    let lb = user_data(&t, "LoadBalancerLaunchTemplate");
    let web = user_data(&t, "WebLaunchTemplate");
    assert!(
        lb.contains("-tag role=lb") && lb.contains("-bind=10.0.0.5"),
        "{lb}"
    );
    assert!(
        web.contains("-tag role=web") && web.contains("-retry-join=10.0.0.5"),
        "{web}"
    );
    assert!(
        !web.contains("-node="),
        "web nodes are named after their hostnames:\n{web}"
    );
}

#[test]
fn cloudformation_installs_the_same_systemd_unit_as_install_sh() {
    let t = template();
    let unit = read(&deploy("systemd/vassal.service"));
    for lt in ["LoadBalancerLaunchTemplate", "WebLaunchTemplate"] {
        let embedded = heredoc(&user_data(&t, lt), "UNIT");
        assert!(
            embedded == unit,
            "{lt} writes a vassal.service that differs from deploy/systemd/vassal.service; \
             copy the file into the template.\n--- template ---\n{embedded}--- file ---\n{unit}"
        );
    }
}

#[test]
fn shell_scripts_pass_shellcheck_including_user_data() {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![
        deploy("build-image.sh"),
        deploy("build-nginx-image.sh"),
        deploy("install.sh"),
        repo().join("scripts/setup"),
        repo().join("scripts/test"),
        repo().join("scripts/fuzz"),
        repo().join(".ci/run"),
    ];
    for lt in ["LoadBalancerLaunchTemplate", "WebLaunchTemplate"] {
        let script = user_data(&t, lt)
            .replace("${VassalUrl}", "https://example.invalid/vassal")
            .replace("${VassalSha256}", "");
        let path = dir.path().join(format!("{lt}.sh"));
        std::fs::write(&path, script).unwrap();
        files.push(path);
    }
    let out = run(
        Command::new("shellcheck").args(&files),
        "apt-get install shellcheck (scripts/setup does)",
    );
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn install_sh_installs_binary_unit_and_role_flags_into_a_root() {
    let root = tempfile::tempdir().unwrap();
    let bin = vassal_testkit::vassal_bin();
    let out = run(
        Command::new(deploy("install.sh"))
            .arg("--binary")
            .arg(&bin)
            .args(["--role", "web", "--lb-addr", "192.0.2.7", "--root"])
            .arg(root.path()),
        "",
    );
    assert!(
        out.status.success(),
        "install.sh failed:\n{}",
        text(&out.stderr)
    );

    let installed = root.path().join("usr/local/bin/vassal");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&bin).unwrap(),
        "the binary is copied as is"
    );
    assert_eq!(
        read(&root.path().join("etc/systemd/system/vassal.service")),
        read(&deploy("systemd/vassal.service"))
    );
    let env = read(&root.path().join("etc/vassal/vassal.env"));
    let flags = env
        .lines()
        .find_map(|l| l.strip_prefix("VASSAL_FLAGS="))
        .unwrap_or_else(|| panic!("no VASSAL_FLAGS= line in vassal.env:\n{env}"));
    assert_eq!(
        flags,
        "-tag role=web -web-listen=0.0.0.0:80 -retry-join=192.0.2.7 -retry-interval=5s"
    );

    // Re-running without a role keeps the flags someone may have edited.
    let out = run(
        Command::new(deploy("install.sh"))
            .arg("--binary")
            .arg(&bin)
            .arg("--root")
            .arg(root.path()),
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(read(&root.path().join("etc/vassal/vassal.env")), env);

    // Bad input: a clear error, nothing half-done.
    let out = run(
        Command::new(deploy("install.sh"))
            .args(["--binary", "/nonexistent/vassal", "--root"])
            .arg(root.path()),
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no binary at /nonexistent/vassal"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn systemd_unit_verifies_cleanly() {
    // `systemd-analyze verify` checks that ExecStart's program exists, so point it at our build.
    let dir = tempfile::tempdir().unwrap();
    let unit = read(&deploy("systemd/vassal.service")).replace(
        "/usr/local/bin/vassal",
        vassal_testkit::vassal_bin().to_str().unwrap(),
    );
    let path = dir.path().join("vassal.service");
    std::fs::write(&path, unit).unwrap();
    let out = run(
        Command::new("systemd-analyze").arg("verify").arg(&path),
        "apt-get install systemd",
    );
    // Unknown or misspelt directives are only warnings on stderr, so stderr must be empty.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify deploy/systemd/vassal.service:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
