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
