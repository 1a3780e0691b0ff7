use super::*;
use crate::keys::KeyPair;
use crate::names::ComponentName;

/// Whether NATS pattern `pattern` matches the concrete subject `subject`.
fn matches(pattern: &str, subject: &str) -> bool {
    let (mut p, mut s) = (pattern.split('.'), subject.split('.'));
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn may_publish(user: &NatsUser, subject: &str) -> bool {
    user.publish.iter().any(|p| matches(p, subject))
        && !user.publish_deny.iter().any(|p| matches(p, subject))
}

fn may_subscribe(user: &NatsUser, subject: &str) -> bool {
    user.subscribe.iter().any(|p| matches(p, subject))
}

struct Fixture {
    authz: LatticeAuthz,
    a: PublicKey,
    b: PublicKey,
}

fn fixture(domain: Option<&str>) -> Fixture {
    let a = KeyPair::generate(KeyRole::Host).public_key();
    let b = KeyPair::generate(KeyRole::Host).public_key();
    let authz = LatticeAuthz {
        lattice: LatticeName::new("t").expect("valid"),
        control: vec![KeyPair::generate(KeyRole::Operator).public_key()],
        hosts: vec![a.clone(), b.clone()],
        operators: vec![KeyPair::generate(KeyRole::User).public_key()],
        js_domain: domain.map(str::to_string),
        app_subjects: vec!["orders.>".into()],
        app_buckets: vec!["counters".into()],
    };
    authz.check().expect("valid");
    Fixture { authz, a, b }
}

fn user(authz: &LatticeAuthz, role: impl Fn(&Role) -> bool) -> NatsUser {
    authz
        .users()
        .into_iter()
        .find(|u| role(&u.role))
        .expect("the user")
}

#[test]
fn a_host_publishes_only_its_own_subjects_and_never_ctl() {
    let f = fixture(None);
    let a = user(
        &f.authz,
        |r| matches!(r, Role::Host(h) if h.as_str() == f.a.as_str()),
    );
    let (ka, kb) = (f.a.as_str(), f.b.as_str());
    // A host's own subjects, as the protocol builds them.
    let lattice = LatticeName::new("t").expect("valid");
    let redis = ComponentName::new("keyvalue-redis").expect("valid");
    let heartbeat = |key: &str| {
        Subject::heartbeat(&lattice, &HostId::new(key.to_string()).expect("valid")).to_string()
    };
    let provider = |key: &str| {
        Subject::provider(
            &lattice,
            &HostId::new(key.to_string()).expect("valid"),
            &redis,
        )
        .to_string()
    };
    for ok in [
        heartbeat(ka),
        provider(ka),
        "lattice.t.rpc.app.sink".into(),
        "lattice.t.q.app.sink".into(),
        format!("$KV.LATTICE_t_clocks.{ka}"),
        "$JS.API.STREAM.INFO.KV_LATTICE_t_assignments".into(),
        // Its own assignment: a watch with the filter in the subject, a direct get.
        format!(
            "$JS.API.CONSUMER.CREATE.KV_LATTICE_t_assignments.w1.$KV.LATTICE_t_assignments.{ka}"
        ),
        format!("$JS.API.DIRECT.GET.KV_LATTICE_t_assignments.$KV.LATTICE_t_assignments.{ka}"),
        "$JS.API.STREAM.INFO.OBJ_LATTICE_t_artifacts".into(),
        "$JS.API.CONSUMER.MSG.NEXT.LATTICE_t_queue.queue-app-sink".into(),
        "$JS.ACK.LATTICE_t_queue.queue-app-sink.1.2.3.4.5".into(),
        "$KV.counters.k".into(),
        "orders.new".into(),
    ] {
        assert!(may_publish(&a, &ok), "{ok}");
    }
    for refused in [
        heartbeat(kb),
        provider(kb),
        "lattice.t.ctl.deploy".into(),
        "lattice.t.evt.control".into(),
        format!("$KV.LATTICE_t_assignments.{kb}"),
        format!("$KV.LATTICE_t_assignments.{ka}"),
        format!("$KV.LATTICE_t_clocks.{kb}"),
        "$KV.LATTICE_t_manifests.app".into(),
        "$JS.API.STREAM.INFO.KV_LATTICE_t_manifests".into(),
        "$JS.API.DIRECT.GET.KV_LATTICE_t_manifests.$KV.LATTICE_t_manifests.app".into(),
        "$JS.API.CONSUMER.CREATE.KV_LATTICE_t_users".into(),
        // Hosts do not read the lattice's events.
        "$JS.API.STREAM.INFO.LATTICE_t_events".into(),
        "$JS.API.CONSUMER.CREATE.LATTICE_t_events.w1.lattice.t.evt.control".into(),
        "$JS.API.STREAM.PURGE.KV_LATTICE_t_assignments".into(),
        "$JS.API.STREAM.UPDATE.KV_LATTICE_t_assignments".into(),
        // Another host's assignment, or a read whose filter is only in the body.
        format!(
            "$JS.API.CONSUMER.CREATE.KV_LATTICE_t_assignments.w1.$KV.LATTICE_t_assignments.{kb}"
        ),
        format!("$JS.API.DIRECT.GET.KV_LATTICE_t_assignments.$KV.LATTICE_t_assignments.{kb}"),
        "$JS.API.CONSUMER.CREATE.KV_LATTICE_t_assignments".into(),
        "$JS.API.CONSUMER.CREATE.KV_LATTICE_t_assignments.w1".into(),
        "$JS.API.CONSUMER.DURABLE.CREATE.KV_LATTICE_t_assignments.w1".into(),
        "$JS.API.DIRECT.GET.KV_LATTICE_t_assignments".into(),
        "$JS.API.STREAM.MSG.GET.KV_LATTICE_t_assignments".into(),
        "$JS.API.STREAM.DELETE.LATTICE_t_queue".into(),
        "$JS.API.STREAM.DELETE.OBJ_LATTICE_t_artifacts".into(),
        "$O.LATTICE_t_artifacts.C.x".into(),
        "lattice.u.rpc.app.sink".into(),
        "$JS.API.STREAM.INFO.LATTICE_u_queue".into(),
        "_INBOX.x".into(),
    ] {
        assert!(!may_publish(&a, &refused), "{refused}");
    }
    let inbox = format!("{}.abc.1", inbox_prefix(&user_nkey(&f.a)));
    assert!(may_subscribe(&a, &inbox));
    assert!(may_subscribe(&a, &provider(ka)));
    let other_inbox = format!("{}.abc.1", inbox_prefix(&user_nkey(&f.b)));
    for refused in [
        other_inbox.as_str(),
        "_INBOX.abc",
        "lattice.t.ctl.deploy",
        &provider(kb),
        "lattice.t.evt.heartbeat.x",
    ] {
        assert!(!may_subscribe(&a, refused), "{refused}");
    }
    assert!(a.allow_responses);
}

#[test]
fn operators_reach_ctl_and_the_artifact_store_only() {
    let f = fixture(None);
    let op = user(&f.authz, |r| *r == Role::Operator);
    for ok in [
        "lattice.t.ctl.deploy",
        "lattice.t.ctl.users_add",
        "$JS.API.STREAM.INFO.OBJ_LATTICE_t_artifacts",
        "$O.LATTICE_t_artifacts.C.abc",
        "$KV.LATTICE_t_tags.hello.0.1.0",
        // `ctl watch --since`: an ordered pull consumer on the events stream.
        "$JS.API.STREAM.INFO.LATTICE_t_events",
        "$JS.API.CONSUMER.CREATE.LATTICE_t_events.w1.lattice.t.evt.control",
        "$JS.API.CONSUMER.MSG.NEXT.LATTICE_t_events.w1",
    ] {
        assert!(may_publish(&op, ok), "{ok}");
    }
    for refused in [
        "lattice.t.rpc.app.sink",
        "lattice.t.q.app.sink",
        "lattice.t.evt.heartbeat.x",
        "$KV.LATTICE_t_manifests.app",
        "$JS.API.STREAM.INFO.KV_LATTICE_t_manifests",
        "$JS.API.STREAM.DELETE.OBJ_LATTICE_t_artifacts",
        "$JS.API.STREAM.PURGE.LATTICE_t_events",
        "$JS.API.STREAM.UPDATE.LATTICE_t_events",
        "$JS.API.STREAM.MSG.DELETE.LATTICE_t_events",
        "lattice.t.evt.control",
        "lattice.u.ctl.deploy",
    ] {
        assert!(!may_publish(&op, refused), "{refused}");
    }
    assert!(may_subscribe(&op, "lattice.t.evt.control"));
    assert!(!may_subscribe(&op, "lattice.t.ctl.deploy"));
    assert!(!op.allow_responses);
}

#[test]
fn the_control_plane_serves_ctl_and_keeps_every_bucket() {
    let f = fixture(None);
    let c = user(&f.authz, |r| *r == Role::Control);
    assert!(may_subscribe(&c, "lattice.t.ctl.deploy"));
    assert!(may_subscribe(&c, "lattice.t.evt.heartbeat.x"));
    assert!(may_publish(&c, "$KV.LATTICE_t_assignments.x"));
    assert!(may_publish(&c, "$KV.LATTICE_t_manifests.app"));
    assert!(may_publish(&c, "lattice.t.evt.control"));
    assert!(!may_publish(&c, "lattice.t.ctl.deploy"));
    assert!(!may_publish(&c, "lattice.u.evt.control"));
    assert!(may_publish(&c, "$JS.API.STREAM.CREATE.LATTICE_t_events"));
}

#[test]
fn a_domain_adds_its_api_prefix() {
    let f = fixture(Some("hub"));
    let a = user(&f.authz, |r| matches!(r, Role::Host(_)));
    let Role::Host(host) = &a.role else {
        unreachable!("a host")
    };
    assert!(may_publish(
        &a,
        &format!(
            "$JS.hub.API.CONSUMER.CREATE.KV_LATTICE_t_assignments.w.$KV.LATTICE_t_assignments.{host}"
        )
    ));
    assert!(!may_publish(
        &a,
        "$JS.hub.API.CONSUMER.CREATE.KV_LATTICE_t_assignments"
    ));
    assert!(!may_publish(
        &a,
        "$JS.hub.API.STREAM.INFO.KV_LATTICE_t_manifests"
    ));
    assert!(!may_publish(
        &a,
        "$JS.hub.API.STREAM.PURGE.KV_LATTICE_t_assignments"
    ));
}

#[test]
fn wrong_keys_and_names_are_refused_with_the_flag_to_fix() {
    let mut f = fixture(None);
    f.authz
        .hosts
        .push(KeyPair::generate(KeyRole::User).public_key());
    let err = f
        .authz
        .check()
        .expect_err("a user key among hosts")
        .to_string();
    assert!(err.contains("--host-key"), "{err}");
    let mut f = fixture(None);
    f.authz.control.clear();
    assert_eq!(f.authz.check(), Err(AuthzError::NoControl));
    let mut f = fixture(None);
    f.authz.app_subjects.push("a b".into());
    assert!(matches!(f.authz.check(), Err(AuthzError::BadName(_))));
}

#[test]
fn the_account_renders_every_user_and_the_leaf_links() {
    let f = fixture(Some("hub"));
    let leaf = LeafLink {
        name: "edge".into(),
        password: "secret".into(),
    };
    let text = render_account(&f.authz, std::slice::from_ref(&leaf));
    assert!(text.contains("LATTICE_t: {"));
    assert!(text.contains("jetstream: enabled"));
    for u in f.authz.users() {
        assert!(text.contains(&u.nkey), "{}", u.nkey);
    }
    assert!(text.contains("\"user\":\"leaf-edge\""), "{text}");
    let leaf_text = render_leaf(&f.authz, &leaf, &["nats-leaf://hub:7422".into()]);
    assert!(leaf_text.contains("nats-leaf://leaf-edge:secret@hub:7422"));
    assert!(leaf_text.contains("default_js_domain"));
    // A clustered hub: one remote listing every node, each with the link's credentials.
    let nodes: Vec<String> = (1..=3)
        .map(|n| format!("nats-leaf://hub-{n}:7422"))
        .collect();
    let leaf_text = render_leaf(&f.authz, &leaf, &nodes);
    assert_eq!(leaf_text.matches("\"account\"").count(), 1, "{leaf_text}");
    for n in 1..=3 {
        let url = format!("\"nats-leaf://leaf-edge:secret@hub-{n}:7422\"");
        assert!(leaf_text.contains(&url), "{leaf_text}");
    }
}
