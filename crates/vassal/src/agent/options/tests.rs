use super::*;

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn defaults_match_serf() {
    let o = options(&[]).unwrap();
    assert_eq!(o.bind, "0.0.0.0:7946");
    assert_eq!(o.retry_interval, Duration::from_secs(30));
    assert_eq!(o.retry_max, 0);
    assert_eq!(o.profile, Profile::Lan);
    assert_eq!(o.protocol, 5);
    assert_eq!(o.rpc_addr, "127.0.0.1:7373");
    assert_eq!(o.rpc_auth, "");
    assert!(!o.node.is_empty(), "node defaults to the hostname");
}

#[test]
fn tags_and_joins_repeat() {
    let o = options(&args(&[
        "-tag",
        "role=web",
        "--tag=dc=eu",
        "-join",
        "a",
        "-join=b:7000",
    ]))
    .unwrap();
    assert_eq!(o.tags["role"], "web");
    assert_eq!(o.tags["dc"], "eu");
    assert_eq!(o.join, ["a", "b:7000"]);
}

#[test]
fn bad_values_name_the_flag() {
    for (a, flag) in [
        (&["-tag", "novalue"][..], "-tag"),
        (&["-profile=moon"], "-profile"),
        (&["-encrypt=aGVsbG8="], "-encrypt"),
        (&["-protocol=9"], "-protocol"),
        (&["-retry-interval=5"], "-retry-interval"),
        (&["-log-level=loud"], "-log-level"),
    ] {
        let e = options(&args(a)).unwrap_err().to_string();
        assert!(e.contains(flag), "{a:?}: {e}");
    }
}

#[test]
fn issue_11_limits_have_defaults_and_zero_means_none() {
    let o = options(&[]).unwrap();
    assert_eq!(o.handler_timeout, Some(Duration::from_secs(60)));
    let l = o.roles.http_limits;
    assert_eq!(l.header_timeout, Some(Duration::from_secs(10)));
    assert!((1..=4096).contains(&l.max_conns), "{}", l.max_conns);
    assert!(o.roles.lb_backend_cidrs.is_empty());

    let o = options(&args(&[
        "-handler-timeout=0",
        "-lb-header-timeout=0",
        "-lb-max-conns=7",
        "-lb-backend-cidr=10.0.0.0/8",
        "-lb-backend-cidr",
        "127.0.0.2",
    ]))
    .unwrap();
    assert_eq!(o.handler_timeout, None);
    assert_eq!(o.roles.http_limits.header_timeout, None);
    assert_eq!(o.roles.http_limits.max_conns, 7);
    let cidrs: Vec<String> = o
        .roles
        .lb_backend_cidrs
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(cidrs, ["10.0.0.0/8", "127.0.0.2/32"]);

    for (a, says) in [
        (&["-lb-max-conns=0"][..], "-lb-max-conns"),
        (&["-lb-backend-cidr=10.0.0.1/8"], "did you mean 10.0.0.0/8"),
        (&["-handler-timeout=soon"], "-handler-timeout"),
    ] {
        let e = options(&args(a)).unwrap_err().to_string();
        assert!(e.contains(says), "{a:?}: {e}");
    }
}

#[test]
fn a_bad_encrypt_key_is_not_repeated_in_the_error() {
    let e = options(&args(&["-encrypt=SECRETSECRETSECRET!"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("-encrypt") && e.contains("illegal base64") && !e.contains("SECRET"),
        "{e}"
    );
}

#[test]
fn a_16_byte_key_makes_a_keyring() {
    let o = options(&args(&["-encrypt", "AAAAAAAAAAAAAAAAAAAAAA=="])).unwrap();
    assert!(o.keyring.is_some());
}

#[test]
fn syslog_and_log_json_are_opt_in() {
    let o = options(&args(&["-node=a"])).unwrap();
    assert_eq!((o.syslog, o.log_json), (None, false));
    let o = options(&args(&["-node=a", "-syslog", "-log-json"])).unwrap();
    assert_eq!((o.syslog, o.log_json), (Some(Facility::LOCAL0), true));
}

#[test]
fn event_handlers_repeat_and_replay_is_a_bool() {
    let o = options(&args(&[
        "-event-handler",
        "x.sh",
        "-event-handler=member-join,user:deploy=y.sh a=b",
        "-replay",
    ]))
    .unwrap();
    assert_eq!(o.event_handlers.len(), 2);
    assert_eq!(o.event_handlers[1].script, "y.sh a=b");
    assert!(o.replay);
    assert!(!options(&[]).unwrap().replay);
}

#[test]
fn a_bad_handler_filter_names_the_filter_and_the_flag() {
    let e = options(&args(&["-event-handler=member-jion=x.sh"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("-event-handler") && e.contains("\"member-jion\""),
        "{e}"
    );
}

// spec §5.7, Go's agent.go: tags come from flags or from the tags file, never both.
#[test]
fn a_tags_file_replaces_tag_flags_and_refuses_to_combine_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tags.json");
    let file = format!("-tags-file={}", path.display());
    let e = load_files(&mut options(&args(&["-tag=role=web", &file])).unwrap()).unwrap_err();
    assert!(
        e.contains("Tags config not allowed while using tag files"),
        "{e}"
    );
    let e = load_files(&mut options(&args(&["-role=web", &file])).unwrap()).unwrap_err();
    assert!(e.contains("Tags config not allowed"), "{e}");

    let mut o = options(&args(&[&file])).unwrap();
    load_files(&mut o).unwrap();
    assert!(o.tags.is_empty(), "no file yet: no tags");
    std::fs::write(&path, r#"{"role": "lb", "dc": "eu"}"#).unwrap();
    let mut o = options(&args(&[&file])).unwrap();
    load_files(&mut o).unwrap();
    assert_eq!(o.tags["role"], "lb");
    assert_eq!(o.tags["dc"], "eu");
}

#[test]
fn a_keyring_file_must_hold_keys_and_excludes_encrypt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let file = format!("-keyring-file={}", path.display());
    let e = load_files(&mut options(&args(&[&file])).unwrap()).unwrap_err();
    assert!(
        e.contains("does not exist") && e.contains("keyring.json"),
        "{e}"
    );
    std::fs::write(&path, "[]").unwrap();
    let e = load_files(&mut options(&args(&[&file])).unwrap()).unwrap_err();
    assert!(e.contains("Keyring file contains no keys"), "{e}");

    std::fs::write(
        &path,
        r#"["AQEBAQEBAQEBAQEBAQEBAQ==", "AgICAgICAgICAgICAgICAg=="]"#,
    )
    .unwrap();
    let e = load_files(&mut options(&args(&["-encrypt=AAAAAAAAAAAAAAAAAAAAAA==", &file])).unwrap())
        .unwrap_err();
    assert!(
        e.contains("Encryption key not allowed while using a keyring"),
        "{e}"
    );
    let mut o = options(&args(&[&file])).unwrap();
    load_files(&mut o).unwrap();
    let ring = o.keyring.expect("keyring from the file");
    assert_eq!(ring.primary(), &[1u8; 16][..]);
    assert_eq!(ring.keys().len(), 2);
}

#[test]
fn snapshot_and_rejoin_are_serf_flags() {
    let o = options(&args(&["-snapshot=/tmp/x.snap", "-rejoin"])).unwrap();
    assert_eq!(o.snapshot, Some(PathBuf::from("/tmp/x.snap")));
    assert!(o.rejoin);
    let o = options(&[]).unwrap();
    assert_eq!((o.snapshot, o.rejoin), (None, false));
}

#[test]
fn haproxy_flags_need_the_socket_and_default_to_backend_web() {
    assert!(options(&[]).unwrap().haproxy.is_none());
    let o = options(&args(&["-haproxy-socket=/run/h.sock"])).unwrap();
    let (socket, config) = o.haproxy.unwrap();
    assert_eq!(socket, std::path::Path::new("/run/h.sock"));
    assert_eq!(config.backend, "web");
    assert_eq!(config.quiesce, Duration::from_millis(200));
    let o = options(&args(&[
        "-haproxy-socket=/s",
        "-haproxy-backend=pool",
        "-haproxy-quiesce=1s",
    ]))
    .unwrap();
    let (_, config) = o.haproxy.unwrap();
    assert_eq!(
        (config.backend.as_str(), config.quiesce),
        ("pool", Duration::from_secs(1))
    );
    for (a, flag) in [
        (&["-haproxy-backend=web"][..], "-haproxy-socket"),
        (
            &["-haproxy-socket=/s", "-haproxy-backend=a b"],
            "-haproxy-backend",
        ),
        (
            &["-haproxy-socket=/s", "-haproxy-quiesce=5"],
            "-haproxy-quiesce",
        ),
    ] {
        let e = options(&args(a)).unwrap_err().to_string();
        assert!(e.contains(flag), "{a:?}: {e}");
    }
}

#[test]
fn web_listen_advertises_its_port_in_the_http_port_tag() {
    let o = options(&args(&["-tag=role=web", "-web-listen=127.0.0.2:8001"])).unwrap();
    assert_eq!(o.tags["http_port"], "8001");
    assert_eq!(o.roles.web_listen, Some("127.0.0.2:8001".parse().unwrap()));
    assert!(o.roles.answer_load);
    let o = options(&args(&["-web-listen=127.0.0.2:8001", "-tag=http_port=80"])).unwrap();
    assert_eq!(o.tags["http_port"], "80", "an explicit tag wins");
}

#[test]
fn role_flags_need_ip_port_and_stats_needs_the_balancer() {
    let e = options(&args(&["-lb-listen=localhost"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("-lb-listen") && e.contains("IP:PORT"), "{e}");
    let e = options(&args(&["-lb-stats=127.0.0.1:9999"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("-lb-stats") && e.contains("-lb-listen"), "{e}");
    let o = options(&args(&[
        "-lb-listen=127.0.0.1:8080",
        "-lb-stats=127.0.0.1:9999",
    ]))
    .unwrap();
    assert_eq!(o.roles.lb_stats, Some("127.0.0.1:9999".parse().unwrap()));
}

#[test]
fn load_is_answered_by_roles_unless_a_handler_answers_it() {
    let answers = |a: &[&str]| options(&args(a)).unwrap().roles.answer_load;
    assert!(answers(&["-tag=role=lb"]));
    assert!(answers(&["-tag=role=web"]));
    assert!(!answers(&["-tag=role=db"]), "no demo role");
    assert!(!answers(&[
        "-tag=role=web",
        "-event-handler=query:load=uptime"
    ]));
    assert!(
        !answers(&["-tag=role=web", "-event-handler=uptime"]),
        "a catch-all handler"
    );
    assert!(answers(&[
        "-tag=role=web",
        "-event-handler=query:other=x.sh"
    ]));
}

/// Writes a config file and returns the `-config-file` flag naming it.
fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("agent.json");
    std::fs::write(&path, text).unwrap();
    format!("-config-file={}", path.display())
}

// spec §5.4: a file's settings are the agent's settings; flags given after them win.
#[test]
fn file_settings_become_options_that_real_flags_follow() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        &dir,
        r#"{"node_name": "n1", "tags": {"role": "web"}, "retry_interval": "1500ms",
            "start_join": ["a", "b"], "replay_on_join": true, "leave_on_terminate": true,
            "enable_compression": false}"#,
    );
    let o = options(&args(&[&file])).unwrap();
    assert_eq!(o.node, "n1");
    assert_eq!(o.retry_interval, Duration::from_millis(1500));
    assert_eq!(o.tags["role"], "web");
    assert_eq!(o.join, ["a", "b"]);
    assert!(o.replay);
    assert!(o.file_only.leave_on_terminate);
    assert!(!o.compression);

    let o = options(&args(&[
        &file,
        "-node=n2",
        "-retry-interval=2s",
        "-tag=role=lb",
        "-tag=dc=eu",
        "-join=c",
        "-replay=false",
        "-disable-compression=false",
    ]))
    .unwrap();
    assert_eq!(o.node, "n2", "a flag wins over the file");
    assert_eq!(o.retry_interval, Duration::from_secs(2));
    assert_eq!(
        (o.tags["role"].as_str(), o.tags["dc"].as_str()),
        ("lb", "eu")
    );
    assert_eq!(o.join, ["a", "b", "c"], "joins add to the file's");
    assert!(
        !o.replay && o.compression,
        "a bool flag given false wins too"
    );
}

#[test]
fn issue_11_limit_keys_in_a_file_reach_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        &dir,
        r#"{"handler_timeout": "90s", "lb_header_timeout": "5s", "lb_max_conns": 100,
            "lb_backend_cidr": ["10.0.0.0/8", "192.168.0.0/16"]}"#,
    );
    let o = options(&args(&[&file, "-lb-backend-cidr=127.0.0.2"])).unwrap();
    assert_eq!(o.handler_timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        o.roles.http_limits.header_timeout,
        Some(Duration::from_secs(5))
    );
    assert_eq!(o.roles.http_limits.max_conns, 100);
    let cidrs: Vec<String> = o
        .roles
        .lb_backend_cidrs
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(cidrs, ["10.0.0.0/8", "192.168.0.0/16", "127.0.0.2/32"]);
}

#[test]
fn an_unknown_profile_is_refused_in_a_flag_and_in_a_file() {
    let e = options(&args(&["-profile=moon"])).unwrap_err().to_string();
    assert!(
        e.contains("-profile") && e.contains("Unknown profile: moon"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(&dir, r#"{"profile": "moon"}"#);
    let e = options(&args(&[&file])).unwrap_err().to_string();
    assert!(
        e.contains("agent.json") && e.contains("\"profile\"") && e.contains("Unknown profile"),
        "{e}"
    );
    let file = config_file(&dir, r#"{"profile": "wan"}"#);
    assert_eq!(options(&args(&[&file])).unwrap().profile, Profile::Wan);
    let o = options(&args(&[&file, "-profile=local"])).unwrap();
    assert_eq!(o.profile, Profile::Local);
}

#[test]
fn a_tag_without_a_name_is_refused_in_a_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(&dir, r#"{"tags": {"": "x"}}"#);
    let e = options(&args(&[&file])).unwrap_err().to_string();
    assert!(e.contains("agent.json") && e.contains("\"tags\""), "{e}");
}

// Issue 13: the cluster page is off unless `-ui-addr` or the `ui_addr` key names an address;
// the flag wins over the file.
#[test]
fn the_cluster_page_is_off_by_default_and_set_by_flag_or_file() {
    assert_eq!(options(&[]).unwrap().roles.ui_listen, None);
    let o = options(&args(&["-ui-addr=127.0.0.1:9990"])).unwrap();
    assert_eq!(o.roles.ui_listen, Some("127.0.0.1:9990".parse().unwrap()));
    let e = options(&args(&["-ui-addr=9990"])).unwrap_err().to_string();
    assert!(e.contains("-ui-addr") && e.contains("IP:PORT"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let file = config_file(&dir, r#"{"ui_addr": "127.0.0.2:9990"}"#);
    let o = options(&args(&[&file])).unwrap();
    assert_eq!(o.roles.ui_listen, Some("127.0.0.2:9990".parse().unwrap()));
    let o = options(&args(&[&file, "-ui-addr=127.0.0.3:9991"])).unwrap();
    assert_eq!(o.roles.ui_listen, Some("127.0.0.3:9991".parse().unwrap()));

    let bad = config_file(&dir, r#"{"ui_addr": "localhost"}"#);
    let e = options(&args(&[&bad])).unwrap_err().to_string();
    assert!(e.contains("ui_addr") && e.contains("IP:PORT"), "{e}");
}

#[test]
fn health_check_flags_default_to_the_old_check_and_refuse_bad_values() {
    let o = options(&[]).unwrap();
    assert_eq!(
        o.roles.lb_check,
        vassal_roles::check::CheckConfig::default()
    );

    let o = options(&args(&[
        "-lb-check-path=/healthz?deep=1",
        "-lb-check-interval=250ms",
        "-lb-check-timeout=100ms",
        "-lb-check-rise=3",
        "-lb-check-fall=4",
        "-lb-check-status=200,3xx",
    ]))
    .unwrap();
    let c = &o.roles.lb_check;
    assert_eq!(c.path, "/healthz?deep=1");
    assert_eq!(c.interval, Duration::from_millis(250));
    assert_eq!(c.timeout, Duration::from_millis(100));
    assert_eq!((c.rise, c.fall), (3, 4));
    assert_eq!(c.status.to_string(), "200,300-399");

    for (a, says) in [
        (&["-lb-check-path=healthz"][..], "must start with /"),
        (&["-lb-check-interval=0"], "out of range"),
        (&["-lb-check-interval=soon"], "-lb-check-interval"),
        (&["-lb-check-timeout=1ms"], "out of range"),
        (&["-lb-check-rise=0"], "1 to 1000"),
        (&["-lb-check-fall=many"], "not a whole number"),
        (&["-lb-check-status=ok"], "write e.g. 200, 200-399 or 2xx"),
    ] {
        let e = options(&args(a)).unwrap_err().to_string();
        let flag = a[0].split('=').next().unwrap_or_default();
        assert!(e.contains(says) && e.contains(flag), "{a:?}: {e}");
    }
}

#[test]
fn health_check_keys_in_a_file_reach_the_options_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        &dir,
        r#"{"lb_check_path": "/up", "lb_check_interval": "2s", "lb_check_timeout": "500ms",
            "lb_check_rise": 2, "lb_check_fall": 5, "lb_check_status": "2xx"}"#,
    );
    let o = options(&args(&[&file, "-lb-check-fall=3"])).unwrap();
    let c = &o.roles.lb_check;
    assert_eq!(c.path, "/up");
    assert_eq!(c.interval, Duration::from_secs(2));
    assert_eq!(c.timeout, Duration::from_millis(500));
    assert_eq!((c.rise, c.fall), (2, 3));
    assert_eq!(c.status.to_string(), "200-299");

    for (json, key) in [
        (r#"{"lb_check_rise": 0}"#, "lb_check_rise"),
        (r#"{"lb_check_status": "7xx"}"#, "lb_check_status"),
        (r#"{"lb_check_path": "up"}"#, "lb_check_path"),
        (r#"{"lb_check_interval": "0s"}"#, "lb_check_interval"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = config_file(&dir, json);
        let e = options(&args(&[&file])).unwrap_err().to_string();
        assert!(e.contains(key), "{json}: {e}");
    }
}

#[test]
fn lb_balance_is_roundrobin_unless_told_and_a_typo_is_refused() {
    use vassal_roles::pool::Balance;
    assert_eq!(options(&[]).unwrap().roles.lb_balance, Balance::RoundRobin);
    let o = options(&args(&["-lb-balance=leastload", "-web-delay=20ms"])).unwrap();
    assert_eq!(o.roles.lb_balance, Balance::LeastLoad);
    assert_eq!(o.roles.web_delay, Some(Duration::from_millis(20)));
    let e = options(&args(&["-lb-balance=leastconnections"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("-lb-balance") && e.contains("roundrobin, leastconn or leastload"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(&dir, r#"{"lb_balance": "leastconn"}"#);
    let o = options(&args(&[&file])).unwrap();
    assert_eq!(o.roles.lb_balance, Balance::LeastConn);
}

#[test]
fn lb_tls_needs_both_files_and_the_balancer() {
    let o = options(&args(&[
        "-lb-listen=127.0.0.1:8080",
        "-lb-tls-cert=/etc/lb/cert.pem",
        "-lb-tls-key=/etc/lb/key.pem",
    ]))
    .unwrap();
    let tls = o.roles.lb_tls.expect("TLS files");
    assert_eq!(tls.cert, std::path::Path::new("/etc/lb/cert.pem"));
    assert_eq!(tls.key, std::path::Path::new("/etc/lb/key.pem"));
    for (a, says) in [
        (
            &["-lb-listen=127.0.0.1:8080", "-lb-tls-cert=c.pem"][..],
            "needs -lb-tls-key",
        ),
        (
            &["-lb-listen=127.0.0.1:8080", "-lb-tls-key=k.pem"],
            "needs -lb-tls-cert",
        ),
        (
            &["-lb-tls-cert=c.pem", "-lb-tls-key=k.pem"],
            "needs -lb-listen",
        ),
    ] {
        let e = options(&args(a)).unwrap_err().to_string();
        assert!(e.contains(says), "{a:?}: {e}");
    }
}

#[test]
fn lb_threads_come_from_the_flag_over_the_file_and_stay_within_haproxys_limit() {
    assert_eq!(options(&[]).unwrap().roles.lb_threads, None);
    let o = options(&args(&["-lb-threads=3"])).unwrap();
    assert_eq!(o.roles.lb_threads, Some(3));

    let dir = tempfile::tempdir().unwrap();
    let file = config_file(&dir, r#"{"lb_threads": 2}"#);
    assert_eq!(options(&args(&[&file])).unwrap().roles.lb_threads, Some(2));
    let o = options(&args(&[&file, "-lb-threads=5"])).unwrap();
    assert_eq!(o.roles.lb_threads, Some(5));

    for bad in ["-lb-threads=0", "-lb-threads=65", "-lb-threads=many"] {
        let e = options(&args(&[bad])).unwrap_err().to_string();
        assert!(
            e.contains("-lb-threads") && e.contains("1 to 64"),
            "{bad}: {e}"
        );
    }
    let file = config_file(&dir, r#"{"lb_threads": 0}"#);
    let e = options(&args(&[&file])).unwrap_err().to_string();
    assert!(e.contains("lb_threads") && e.contains("1 to 64"), "{e}");
}
