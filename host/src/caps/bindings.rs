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

/// The messaging handler export, called for each message on a subscribed subject.
pub mod handler {
    wasmtime::component::bindgen!({
        path: ["../wit/deps/messaging.wit"],
        world: "wasmcloud:messaging/handles",
        exports: { default: async },
    });
}
