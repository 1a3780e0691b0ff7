//! The authorization as nats-server configuration text. The server's format reads JSON, so
//! every value is written by serde_json (quoting done right); comments name each user's role.

use serde_json::{Value, json};

use super::{LatticeAuthz, NatsUser, Role};

/// A leaf node's link to the hub: a user of the lattice's account on the hub, with a password.
#[derive(Debug, Clone)]
pub struct LeafLink {
    /// The leaf's name (its user is `leaf-<name>`).
    pub name: String,
    /// Its password (random, made by `lattice nats authz`).
    pub password: String,
}

impl LeafLink {
    /// The hub user the leaf connects as.
    pub fn user(&self) -> String {
        format!("leaf-{}", self.name)
    }
}

/// The account of `lattice` in the server's `accounts` block.
pub fn account_name(lattice: &crate::names::LatticeName) -> String {
    format!("LATTICE_{lattice}")
}

fn user_value(user: &NatsUser) -> Value {
    let mut publish = json!({ "allow": user.publish });
    if !user.publish_deny.is_empty() {
        publish["deny"] = json!(user.publish_deny);
    }
    let mut permissions = json!({
        "publish": publish,
        "subscribe": { "allow": user.subscribe },
    });
    if user.allow_responses {
        permissions["allow_responses"] = json!(true);
    }
    json!({ "nkey": user.nkey, "permissions": permissions })
}

fn role_comment(role: &Role) -> String {
    match role {
        Role::Control => "control plane".into(),
        Role::Host(host) => format!("host {host} (and its provider processes)"),
        Role::Operator => "operator".into(),
    }
}

fn users_text(authz: &LatticeAuthz, indent: &str) -> String {
    let mut out = String::new();
    for user in authz.users() {
        out.push_str(&format!("{indent}# {}\n", role_comment(&user.role)));
        let text = serde_json::to_string_pretty(&user_value(&user)).unwrap_or_default();
        for line in text.lines() {
            out.push_str(&format!("{indent}{line}\n"));
        }
    }
    out
}

/// The lattice's account, to include inside the hub's `accounts { }` block: JetStream on, its
/// users, and a user for each leaf link.
pub fn render_account(authz: &LatticeAuthz, leaves: &[LeafLink]) -> String {
    let account = account_name(&authz.lattice);
    let mut out = format!(
        "# The NATS account of lattice `{}`, written by `lattice nats authz`; include it inside\n\
         # the server's `accounts {{ }}` block. Regenerate it when hosts or operators change.\n\
         {account}: {{\n  jetstream: enabled\n  users: [\n",
        authz.lattice
    );
    out.push_str(&users_text(authz, "    "));
    for leaf in leaves {
        out.push_str(&format!(
            "    # leaf node {} (its link to this hub)\n    {}\n",
            leaf.name,
            json!({ "user": leaf.user(), "password": leaf.password })
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

/// A leaf node's configuration for the lattice, to include at the top of its server
/// configuration: the same users (the leaf enforces their permissions for the clients that
/// connect to it), the link to the hub at `hub_urls` (`nats-leaf://host:7422`: every node of a
/// clustered hub, so that the leaf moves to a surviving one), and the hub's JetStream domain
/// for clients that name none.
pub fn render_leaf(authz: &LatticeAuthz, leaf: &LeafLink, hub_urls: &[String]) -> String {
    let account = account_name(&authz.lattice);
    let mut out = format!(
        "# Leaf node `{}` of lattice `{}`, written by `lattice nats authz --leaf`; include it at the\n\
         # top level of the leaf's server configuration.\naccounts {{\n  {account}: {{\n    users: [\n",
        leaf.name, authz.lattice
    );
    out.push_str(&users_text(authz, "      "));
    out.push_str("    ]\n  }\n}\n");
    let credentials = format!("://{}:{}@", leaf.user(), leaf.password);
    let urls: Vec<String> = hub_urls
        .iter()
        .map(|url| url.replacen("://", &credentials, 1))
        .collect();
    out.push_str(&format!(
        "leafnodes {{\n  remotes: [\n    {}\n  ]\n}}\n",
        json!({ "urls": urls, "account": account })
    ));
    if let Some(domain) = &authz.js_domain {
        out.push_str(&format!(
            "# Clients that name no JetStream domain reach the hub's.\ndefault_js_domain: {}\n",
            json!({ account: domain })
        ));
    }
    out
}
