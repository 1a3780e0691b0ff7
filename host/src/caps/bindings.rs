//! Host bindings for the standard interfaces the host serves itself, generated from the
//! repository's `wit/deps` (the only copy of each package).

wasmtime::component::bindgen!({
    path: [
        "../wit/deps/logging.wit",
        "../wit/deps/config.wit",
        "../wit/deps/keyvalue.wit",
        "../wit/deps/messaging.wit",
    ],
    inline: "
        package lattice:host;

        world capabilities {
            import wasi:logging/logging@0.1.0-draft;
            import wasi:config/store@0.2.0-draft;
            import wasi:config/runtime@0.2.0-draft;
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
            import wasi:keyvalue/batch@0.2.0-draft;
            import wasmcloud:messaging/consumer@0.2.0;
        }
    ",
    world: "lattice:host/capabilities",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store.bucket": crate::caps::keyvalue::Bucket,
    },
});

/// `wasi:blobstore`, apart: its streams are wasmtime-wasi's `wasi:io` (already in the linker), so
/// its interfaces are added one by one ([`crate::caps::blobstore::add_to_linker`]) rather than
/// as a world, which would add `wasi:io` a second time.
pub mod blobstore {
    wasmtime::component::bindgen!({
        path: ["../wit/deps/io.wit", "../wit/deps/blobstore.wit"],
        inline: "
            package lattice:blobstore;

            world blobstore {
                import wasi:blobstore/types@0.2.0-draft;
                import wasi:blobstore/container@0.2.0-draft;
                import wasi:blobstore/blobstore@0.2.0-draft;
            }
        ",
        world: "lattice:blobstore/blobstore",
        imports: { default: async | trappable },
        with: {
            // The guest reads and writes values with wasmtime-wasi's streams.
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:blobstore/container.container": crate::caps::blobstore::Container,
            "wasi:blobstore/container.stream-object-names": crate::caps::blobstore::ObjectNames,
            "wasi:blobstore/types.outgoing-value": crate::caps::blobstore::OutgoingValue,
            "wasi:blobstore/types.incoming-value": crate::caps::blobstore::IncomingValue,
        },
    });
}

/// The messaging handler export, called for each message on a subscribed subject.
pub mod handler {
    wasmtime::component::bindgen!({
        path: ["../wit/deps/messaging.wit"],
        world: "wasmcloud:messaging/handles",
        exports: { default: async },
    });
}

/// `wasmcloud:bus/lattice@1.0.0`: a guest chooses its links by name; nothing to report back.
pub mod bus1 {
    wasmtime::component::bindgen!({
        path: ["../wit/deps/bus-1.wit"],
        inline: "
            package lattice:bus1;

            world bus {
                import wasmcloud:bus/lattice@1.0.0;
            }
        ",
        world: "lattice:bus1/bus",
        imports: { default: trappable },
        with: {
            "wasmcloud:bus/lattice.call-target-interface": crate::caps::bus::CallTarget,
        },
    });
}

/// `wasmcloud:bus/lattice@2.0.0`: the same, and a name no link has is an error at once.
pub mod bus2 {
    wasmtime::component::bindgen!({
        path: ["../wit/deps/bus.wit"],
        inline: "
            package lattice:bus2;

            world bus {
                import wasmcloud:bus/lattice@2.0.0;
            }
        ",
        world: "lattice:bus2/bus",
        imports: { default: trappable },
        with: {
            "wasmcloud:bus/lattice.call-target-interface": crate::caps::bus::CallTarget,
        },
    });
}

/// `wasmcloud:secrets` (store, reveal): the workload's secrets, opened by the host.
pub mod secrets {
    wasmtime::component::bindgen!({
        path: ["../wit/deps/secrets.wit"],
        inline: "
            package lattice:secrets;

            world secrets {
                import wasmcloud:secrets/store@0.1.0-draft;
                import wasmcloud:secrets/reveal@0.1.0-draft;
            }
        ",
        world: "lattice:secrets/secrets",
        imports: { default: trappable },
        with: {
            "wasmcloud:secrets/store.secret": crate::caps::secrets::Secret,
        },
    });
}

/// `wasmcloud:messaging@0.3.0`: clients, messages as resources, `producer` and `request-reply`
/// imported, `incoming-handler` exported by components that receive messages.
pub mod messaging3 {
    wasmtime::component::bindgen!({
        path: ["../wit/deps/messaging-0.3.wit"],
        inline: "
            package lattice:messaging3;

            world messaging {
                import wasmcloud:messaging/producer@0.3.0;
                import wasmcloud:messaging/request-reply@0.3.0;
                export wasmcloud:messaging/incoming-handler@0.3.0;
            }
        ",
        world: "lattice:messaging3/messaging",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasmcloud:messaging/types.client": crate::caps::messaging::v0_3::Client,
            "wasmcloud:messaging/types.message": crate::caps::messaging::v0_3::Message,
            "wasmcloud:messaging/request-reply.request-options": crate::caps::messaging::v0_3::RequestOptions,
        },
    });
}
