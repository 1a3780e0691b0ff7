//! wadm shapes that Lattice reads without honouring them as wadm did: `spec.policies`, shared
//! applications (`properties.application`), and a link's `source.name`.
//!
//! A wasmCloud 1.x manifest must either work or be refused with the field, the reason and the
//! nearest thing Lattice offers; never an "unknown field" for something wadm documents.
//!
//! - `spec.policies` configure wadm's secrets backends (`type:
//!   policy.secret.wasmcloud.dev/v1alpha1`, a `backend` such as `nats-kv`). Lattice carries
//!   secret values itself, sealed by `lattice ctl deploy`, so every policy is refused, with how
//!   to write its secrets instead.
//! - `properties.application: {name, component}` reuses a component deployed by another
//!   application (wadm's shared applications). Lattice applications do not share running
//!   components: refused, with how to run it here instead.
//! - `source: {name}` on a link names the component the link starts from. In Lattice that is
//!   always the component the link is written on, so `name` is accepted when it says so and
//!   refused when it names another component.

use crate::diagnostic::Diagnostic;
use crate::validate::ComponentOutline;
use crate::yaml::{Fields, Node, Reader, index, pos};

/// The `type` of wadm's secrets-backend policies.
const SECRET_POLICY: &str = "policy.secret.wasmcloud.dev/v1alpha1";

/// Reads `spec.policies` (shape first, so typos are reported too) and refuses each policy.
pub(crate) fn refuse_policies(reader: &mut Reader, node: &Node<'_>, path: &str) {
    let Some(items) = reader.sequence(node, path) else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let at = index(path, i);
        let Some(fields) = reader.mapping(item, &at, &["name", "type", "properties"]) else {
            continue;
        };
        let name = fields
            .required(reader, "name")
            .and_then(|n| reader.non_empty_string(n, &fields.path("name")));
        let kind = fields
            .required(reader, "type")
            .and_then(|n| reader.non_empty_string(n, &fields.path("type")));
        if let Some(props) = fields.optional("properties") {
            reader.string_map(props, &fields.path("properties"));
        }
        let (Some(name), Some(kind)) = (name, kind) else {
            continue;
        };
        let why = if kind == SECRET_POLICY {
            "it configures a wadm secrets backend, and Lattice keeps secrets itself".to_string()
        } else {
            format!("Lattice has no policy of type `{kind}`")
        };
        reader.push(
            Diagnostic::new(
                pos(item),
                at,
                format!("policy `{name}` cannot be honoured: {why}"),
            )
            .with_help(
                "remove `spec.policies`; write each secret's value in the component's \
                     `secrets` (`properties: {KEY: value}`), which `lattice ctl deploy` seals \
                     so it never sits in clear in the lattice",
            ),
        );
    }
}

/// Refuses `properties.application` (a component shared from another application).
pub(crate) fn refuse_shared_application(reader: &mut Reader, fields: &Fields<'_, '_>) {
    let Some(node) = fields.optional("application") else {
        return;
    };
    let path = fields.path("application");
    let Some(app) = reader.mapping(node, &path, &["name", "component"]) else {
        return;
    };
    let name = app
        .required(reader, "name")
        .and_then(|n| reader.non_empty_string(n, &app.path("name")));
    let component = app
        .required(reader, "component")
        .and_then(|n| reader.non_empty_string(n, &app.path("component")));
    let (Some(name), Some(component)) = (name, component) else {
        return;
    };
    reader.push(
        Diagnostic::new(
            pos(node),
            path,
            format!(
                "component `{component}` of application `{name}` cannot be shared: Lattice \
                 applications do not share running components"
            ),
        )
        .with_help(format!(
            "replace `application` with the `image` of `{component}` so this application runs \
             its own instances (components of one image are compiled once per host), or move \
             this application's links into `{name}`"
        )),
    );
}

/// Checks a link's `source.name`: the component the link is written on, or absent.
pub(crate) fn check_source_name(
    reader: &mut Reader,
    source: &Fields<'_, '_>,
    seen: &ComponentOutline,
) {
    let Some(node) = source.optional("name") else {
        return;
    };
    let path = source.path("name");
    let Some(name) = reader.non_empty_string(node, &path) else {
        return;
    };
    let Some(own) = seen.name.as_ref().map(|n| n.value.as_str()) else {
        return;
    };
    if name != own {
        reader.push(
            Diagnostic::new(
                pos(node),
                path,
                format!(
                    "a link starts from the component it is written on (`{own}`), but \
                     `source.name` says `{name}`"
                ),
            )
            .with_help(format!(
                "move this link into the traits of `{name}`, or remove `source.name`"
            )),
        );
    }
}
