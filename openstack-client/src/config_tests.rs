//! Unit tests of cloud configuration: clouds.yaml/secure.yaml search and merge, `OS_*`
//! variables, every auth type, TLS options and the refusals. Kept apart from `config.rs` so
//! the reader of the loader is not scrolling past 350 lines of cases.

#![allow(clippy::unwrap_used)] // test code

use super::*;

fn sources(yaml: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, ConfigSources) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("clouds.yaml");
    std::fs::write(&p, yaml).unwrap();
    let s = ConfigSources {
        clouds_files: vec![dir.path().join("missing.yaml"), p],
        secure_files: vec![dir.path().join("secure.yaml")],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    (dir, s)
}

const YAML: &str = r#"
clouds:
  a:
    auth:
      auth_url: http://127.0.0.1:5010
      username: admin
      password: pw
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: internal
  b:
    auth_type: v3applicationcredential
    auth:
      auth_url: http://k/identity/v3/
      application_credential_id: abc
      application_credential_secret: s3cret
  c:
    auth_type: admin_token
    auth:
      token: tok
    block_storage_endpoint_override: http://c:8776/v3/p
    image_endpoint_override: http://g:9292
"#;

#[test]
fn password_cloud_by_name() {
    let (_d, s) = sources(YAML, &[]);
    let c = CloudConfig::from_sources(&s, Some("a")).unwrap();
    assert_eq!(c.region_name.as_deref(), Some("RegionOne"));
    assert_eq!(c.interface, Interface::Internal);
    match c.auth {
        AuthMethod::Password {
            auth_url,
            user,
            scope,
            ..
        } => {
            assert_eq!(auth_url.as_str(), "http://127.0.0.1:5010/v3");
            assert_eq!(
                user,
                UserRef::Name {
                    name: "admin".into(),
                    domain: DomainRef::Name("Default".into())
                }
            );
            assert_eq!(
                scope,
                Scope::ProjectName {
                    name: "admin".into(),
                    domain: DomainRef::Name("Default".into())
                }
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn os_cloud_selects_and_region_env_overrides() {
    let (_d, s) = sources(YAML, &[("OS_CLOUD", "b"), ("OS_REGION_NAME", "R2")]);
    let c = CloudConfig::from_sources(&s, None).unwrap();
    assert_eq!(c.name, "b");
    assert_eq!(c.region_name.as_deref(), Some("R2"));
    match c.auth {
        AuthMethod::ApplicationCredential { auth_url, id, .. } => {
            assert_eq!(auth_url.as_str(), "http://k/identity/v3");
            assert_eq!(id.as_deref(), Some("abc"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn static_token_with_overrides() {
    let (_d, s) = sources(YAML, &[]);
    let c = CloudConfig::from_sources(&s, Some("c")).unwrap();
    assert!(matches!(c.auth, AuthMethod::Static { token: Some(_) }));
    assert_eq!(
        c.endpoint_overrides[&ServiceType::BlockStorage].as_str(),
        "http://c:8776/v3/p"
    );
    assert_eq!(
        c.endpoint_overrides[&ServiceType::Image].as_str(),
        "http://g:9292/"
    );
}

#[test]
fn env_vars_make_a_cloud() {
    let (_d, s) = sources(
        YAML,
        &[
            ("OS_AUTH_URL", "http://x:5000/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_ID", "pid"),
            ("OS_USER_DOMAIN_ID", "default"),
        ],
    );
    let c = CloudConfig::from_sources(&s, None).unwrap();
    assert_eq!(c.name, "envvars");
    assert!(c.source.is_none());
    match c.auth {
        AuthMethod::Password { scope, user, .. } => {
            assert_eq!(scope, Scope::ProjectId("pid".into()));
            assert_eq!(
                user,
                UserRef::Name {
                    name: "u".into(),
                    domain: DomainRef::Id("default".into())
                }
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn os_vars_override_the_chosen_file_cloud() {
    let (_d, s) = sources(
        YAML,
        &[
            ("OS_CLOUD", "a"),
            ("OS_PASSWORD", "from-env"),
            ("OS_INTERFACE", "admin"),
        ],
    );
    let c = CloudConfig::from_sources(&s, None).unwrap();
    assert_eq!(c.name, "a");
    assert_eq!(c.interface, Interface::Admin);
    match c.auth {
        AuthMethod::Password { password, user, .. } => {
            assert_eq!(password.expose(), "from-env");
            assert!(matches!(user, UserRef::Name { ref name, .. } if name == "admin"));
        }
        other => panic!("{other:?}"),
    }
    // A cloud named by the caller is taken as written.
    let c = CloudConfig::from_sources(&s, Some("a")).unwrap();
    assert_eq!(c.interface, Interface::Internal);
}

#[test]
fn missing_cloud_names_the_choices() {
    let (_d, s) = sources(YAML, &[]);
    let e = CloudConfig::from_sources(&s, Some("zz"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`zz` not found"), "{e}");
    assert!(e.contains("a, b, c"), "{e}");
    let e = CloudConfig::from_sources(&s, None).unwrap_err().to_string();
    assert!(e.contains("OS_CLOUD"), "{e}");
}

#[test]
fn secure_file_is_merged_and_password_never_printed() {
    let (d, mut s) = sources(
            "clouds:\n  a:\n    auth:\n      auth_url: http://k:5000\n      username: u\n      project_id: p\n",
            &[],
        );
    let sec = d.path().join("secure.yaml");
    std::fs::write(
        &sec,
        "clouds:\n  a:\n    auth:\n      password: topsecret\n",
    )
    .unwrap();
    s.secure_files = vec![sec];
    let c = CloudConfig::from_sources(&s, Some("a")).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("topsecret"), "{dbg}");
    match c.auth {
        AuthMethod::Password { password, .. } => assert_eq!(password.expose(), "topsecret"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn search_path_follows_openstacksdk() {
    let env = BTreeMap::from([
        ("HOME".to_owned(), "/home/u".to_owned()),
        ("OS_CLIENT_CONFIG_FILE".to_owned(), "/x/my.yaml".to_owned()),
    ]);
    let s = ConfigSources::from_vars(env, Some(PathBuf::from("/work")));
    let files: Vec<String> = s
        .clouds_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(files[0], "/x/my.yaml");
    assert_eq!(files[1], "/work/clouds.yaml");
    assert!(files.contains(&"/home/u/.config/openstack/clouds.yml".to_owned()));
    assert!(files.contains(&"/etc/xdg/openstack/clouds.yaml".to_owned()));
    assert_eq!(files.last().unwrap(), "/etc/openstack/clouds.json");
    assert_eq!(s.secure_files[0], PathBuf::from("/work/secure.yaml"));
    let xdg = BTreeMap::from([("XDG_CONFIG_HOME".to_owned(), "/cfg".to_owned())]);
    let s = ConfigSources::from_vars(xdg, None);
    assert_eq!(
        s.clouds_files[0],
        PathBuf::from("/cfg/openstack/clouds.yaml")
    );
}

#[test]
fn v2_auth_url_is_refused() {
    assert!(keystone_v3_url("http://k:5000/v2.0").is_err());
    assert_eq!(
        keystone_v3_url("http://k:5000/").unwrap().as_str(),
        "http://k:5000/v3"
    );
}

/// One password cloud `t` with `extra` lines added to its entry.
fn tls_cloud(auth_url: &str, extra: &str) -> Result<CloudConfig, ConfigError> {
    let yaml = format!(
        "clouds:\n  t:\n    auth:\n      auth_url: {auth_url}\n      username: u\n      \
             password: p\n      project_name: p\n{extra}"
    );
    let (_d, s) = sources(&yaml, &[]);
    CloudConfig::from_sources(&s, Some("t"))
}

#[test]
fn a_path_given_as_verify_is_a_ca_bundle_and_keeps_verification_on() {
    let c = tls_cloud("https://k:5000", "    verify: /etc/pki/cloud-ca.pem\n").unwrap();
    assert!(c.tls.verify);
    assert_eq!(
        c.tls.cacert.as_deref(),
        Some(Path::new("/etc/pki/cloud-ca.pem"))
    );
    assert!(
        c.security_warnings().is_empty(),
        "{:?}",
        c.security_warnings()
    );
}

#[test]
fn verify_false_turns_verification_off_and_says_so() {
    for v in ["false", "False", "'no'", "'0'"] {
        let c = tls_cloud("https://k:5000", &format!("    verify: {v}\n")).unwrap();
        assert!(!c.tls.verify, "verify: {v}");
        let w = c.security_warnings().join("\n");
        assert!(w.contains("verification is OFF for cloud `t`"), "{w}");
    }
}

#[test]
fn verify_true_or_absent_keeps_verification_on() {
    for extra in ["    verify: true\n", "", "    insecure: false\n"] {
        let c = tls_cloud("https://k:5000", extra).unwrap();
        assert!(c.tls.verify, "{extra}");
        assert_eq!(c.tls.cacert, None);
    }
}

#[test]
fn insecure_true_turns_verification_off_unless_verify_says_otherwise() {
    assert!(
        !tls_cloud("https://k", "    insecure: true\n")
            .unwrap()
            .tls
            .verify
    );
    let both = "    insecure: true\n    verify: true\n";
    assert!(tls_cloud("https://k", both).unwrap().tls.verify);
}

#[test]
fn cacert_is_honoured_and_wins_over_a_verify_path() {
    let c = tls_cloud("https://k", "    cacert: /a.pem\n").unwrap();
    assert_eq!(c.tls.cacert.as_deref(), Some(Path::new("/a.pem")));
    let c = tls_cloud("https://k", "    cacert: /a.pem\n    verify: /b.pem\n").unwrap();
    assert_eq!(c.tls.cacert.as_deref(), Some(Path::new("/a.pem")));
}

#[test]
fn cacert_with_verification_off_is_reported_as_ignored() {
    let c = tls_cloud("https://k", "    cacert: /a.pem\n    verify: false\n").unwrap();
    let w = c.security_warnings().join("\n");
    assert!(w.contains("`cacert` /a.pem is ignored"), "{w}");
}

#[test]
fn cert_and_key_are_read_as_the_client_identity() {
    let c = tls_cloud("https://k", "    cert: /c.pem\n    key: /k.pem\n").unwrap();
    assert_eq!(c.tls.client_cert.as_deref(), Some(Path::new("/c.pem")));
    assert_eq!(c.tls.client_key.as_deref(), Some(Path::new("/k.pem")));
}

#[test]
fn a_key_without_a_cert_is_refused() {
    let e = tls_cloud("https://k", "    key: /k.pem\n").unwrap_err();
    assert!(
        e.to_string().contains("`key` is set but `cert` is not"),
        "{e}"
    );
}

#[test]
fn plain_http_auth_url_to_another_machine_warns() {
    let c = tls_cloud("http://keystone.example:5000", "").unwrap();
    let w = c.security_warnings().join("\n");
    assert!(
        w.contains("auth_url http://keystone.example:5000/v3 is plain http"),
        "{w}"
    );
}

#[test]
fn https_and_loopback_auth_urls_do_not_warn() {
    for u in [
        "https://keystone.example:5000",
        "http://127.0.0.1:5010",
        "http://localhost:5000",
    ] {
        let c = tls_cloud(u, "").unwrap();
        assert!(
            c.security_warnings().is_empty(),
            "{u}: {:?}",
            c.security_warnings()
        );
    }
}

#[test]
fn plain_http_endpoint_override_warns() {
    let (_d, s) = sources(YAML, &[]);
    let c = CloudConfig::from_sources(&s, Some("c")).unwrap();
    let w = c.security_warnings().join("\n");
    assert!(
        w.contains("endpoint override http://c:8776/v3/p is plain http"),
        "{w}"
    );
}

#[test]
fn api_timeout_sets_the_time_limit_of_a_request_and_a_bad_one_is_refused() {
    let yaml = |t: &str| {
        format!("clouds:\n  t:\n    auth_type: admin_token\n    auth:\n      token: tok\n    api_timeout: {t}\n")
    };
    let (_d, s) = sources(&yaml("2.5"), &[]);
    let c = CloudConfig::from_sources(&s, Some("t")).unwrap();
    assert_eq!(c.api_timeout, Some(std::time::Duration::from_millis(2500)));
    let (_d, s) = sources(YAML, &[]);
    assert_eq!(
        CloudConfig::from_sources(&s, Some("a"))
            .unwrap()
            .api_timeout,
        None
    );
    for bad in ["0", "-3", "soon"] {
        let (_d, s) = sources(&yaml(bad), &[]);
        let e = CloudConfig::from_sources(&s, Some("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_timeout"), "{bad}: {e}");
    }
}
