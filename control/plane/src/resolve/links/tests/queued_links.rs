//! Queued links: the delivery they carry, where they are allowed (between components, a
//! publisher's consumer link to messaging), and the one-way functions they require.

use super::*;

#[test]
fn queued_links_carry_their_delivery_and_only_between_components() {
    let client = facts(
        &[
            "example:greeter/greet@0.1.0",
            "wasi:keyvalue/store@0.2.0-draft",
        ],
        &[],
        &[],
    );
    let greeter = facts(&[], &["example:greeter/greet@0.1.0"], &[]);
    let m = manifest(&[
        component(
            "client",
            "client:0.1.0",
            &[link("example:greeter", &["greet"], "greeter")
                .prop("delivery", "queued")
                .prop("ttl", "1h")
                .prop("on_full", "drop_oldest")],
        ),
        component("greeter", "greeter:0.1.0", &[]),
    ]);
    let out = wired(
        &m,
        &known(vec![("client", client.clone()), ("greeter", greeter)]),
    );
    assert_eq!(
        out[&name("client")].links[0].queued,
        Some(lattice_protocol::assignment::QueuedDelivery {
            ttl_secs: 3600,
            capacity: 10_000,
            on_full: lattice_protocol::assignment::OnFull::DropOldest,
            max_attempts: 5,
        })
    );

    let m = manifest(&[
        component(
            "client",
            "client:0.1.0",
            &[link("wasi:keyvalue", &["store"], "kv").prop("delivery", "queued")],
        ),
        capability("kv", "builtin:keyvalue-nats", &[]),
    ]);
    one_problem(
        &refused(&m, &known(vec![("client", client)])),
        &[
            "component `client` links `wasi:keyvalue/store` to capability `kv` with `delivery: queued`",
            "only links between components, and links to `builtin:messaging-nats` (queued messages), can be queued",
        ],
    );
}

#[test]
fn a_publishers_consumer_link_to_messaging_nats_may_be_queued() {
    let mut publisher = facts(&[CONSUMER], &[], &[]);
    // `request` returns data: that alone does not refuse a queued messaging link (the host
    // refuses the request itself).
    publisher.interfaces.returning_data = vec![format!("{CONSUMER}#request")];
    let m = manifest(&[
        component(
            "publisher",
            "publisher:0.1.0",
            &[link("wasmcloud:messaging", &["consumer"], "nats")
                .prop("delivery", "queued")
                .prop("max_attempts", "2")],
        ),
        capability("nats", "builtin:messaging-nats", &[]),
    ]);
    let out = wired(&m, &known(vec![("publisher", publisher)]));
    let l = &out[&name("publisher")].links[0];
    assert_eq!(l.target, LinkTarget::Builtin("messaging-nats".into()));
    assert_eq!(l.queued.as_ref().map(|q| q.max_attempts), Some(2));
}

#[test]
fn a_capabilitys_own_link_cannot_be_queued() {
    let echo = facts(&[], &[HANDLER], &[]);
    let m = manifest(&[
        component("echo", "echo:0.1.0", &[]),
        capability(
            "nats",
            "builtin:messaging-nats",
            &[link("wasmcloud:messaging", &["handler"], "echo")
                .source("subscriptions", "orders.>")
                .prop("delivery", "queued")],
        ),
    ]);
    one_problem(
        &refused(&m, &known(vec![("echo", echo)])),
        &[
            "capability `nats` links `wasmcloud:messaging/handler` to `echo` with `delivery: queued`",
            "put `delivery: queued` on the publishing component's wasmcloud:messaging/consumer link to `nats`",
        ],
    );
}

#[test]
fn queued_links_refuse_functions_that_return_data() {
    let mut client = facts(
        &[
            "example:greeter/greet@0.1.0",
            "example:greeter/notifier@0.1.0",
        ],
        &[],
        &[],
    );
    client.interfaces.returning_data = vec![
        "example:greeter/greet@0.1.0#greet".into(),
        "example:greeter/greet@0.1.0#where".into(),
    ];
    let greeter = facts(
        &[],
        &[
            "example:greeter/greet@0.1.0",
            "example:greeter/notifier@0.1.0",
        ],
        &[],
    );
    let linked = |interfaces: &[&'static str]| {
        manifest(&[
            component(
                "client",
                "client:0.1.0",
                &[link("example:greeter", interfaces, "greeter").prop("delivery", "queued")],
            ),
            component("greeter", "greeter:0.1.0", &[]),
        ])
    };
    let known = known(vec![("client", client), ("greeter", greeter)]);
    one_problem(
        &refused(&linked(&["greet", "notifier"]), &known),
        &[
            "component `client` links example:greeter/greet to `greeter` with `delivery: queued`",
            "greet, where of example:greeter/greet return data",
            "remove `delivery: queued`",
        ],
    );
    // One-way functions only: queued.
    assert!(
        wired(&linked(&["notifier"]), &known)[&name("client")].links[0]
            .queued
            .is_some()
    );
}
