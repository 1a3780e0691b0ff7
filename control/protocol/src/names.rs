//! Validated names: every string that may end up inside a NATS subject, a JetStream bucket or a
//! key passes through one of these newtypes first.
//!
//! A name is 1 to 128 characters of ASCII letters, digits, `-` and `_`. That is stricter than
//! NATS needs (which only forbids `.`, `*`, `>`, whitespace and control characters), because the
//! same names also become JetStream bucket and key names, and because a name an operator can type
//! without quoting is a name they can use in every shell.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} name is empty")]
    Empty {
        /// What kind of name it was (lattice, app, component, ...).
        kind: &'static str,
    },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("{kind} name `{name}` is {len} characters long; at most {MAX_NAME_LEN} are allowed")]
    TooLong {
        /// What kind of name it was.
        kind: &'static str,
        /// The refused name (truncated for display).
        name: String,
        /// Its length.
        len: usize,
    },
    /// The name contains a character that is not allowed.
    #[error(
        "{kind} name `{name}` contains {what}; use only letters, digits, `-` and `_` (for example `{suggestion}`)"
    )]
    BadChar {
        /// What kind of name it was.
        kind: &'static str,
        /// The refused name, with control characters escaped.
        name: String,
        /// A description of the first offending character.
        what: String,
        /// The name with every offending character replaced by `-`.
        suggestion: String,
    },
}

fn describe(c: char) -> String {
    match c {
        '.' => "`.` (a NATS subject separator)".to_string(),
        '*' | '>' => format!("`{c}` (a NATS wildcard)"),
        c if c.is_whitespace() => "whitespace".to_string(),
        c if c.is_control() => format!("a control character ({})", c.escape_default()),
        c => format!("`{c}`"),
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Checks `name` as a name of the given `kind`; the error explains what to change.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            name: name.chars().take(32).collect::<String>() + "...",
            len: name.len(),
        });
    }
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        let suggestion: String = name
            .chars()
            .map(|c| if allowed(c) { c } else { '-' })
            .collect();
        return Err(NameError::BadChar {
            kind,
            name: name.escape_default().to_string(),
            what: describe(bad),
            suggestion,
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Parses and validates a name.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate_name($kind, &name)?;
                Ok(Self(name))
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of a lattice: the shared subject space hosts and the control plane join.
    LatticeName,
    "lattice"
);
name_type!(
    /// The name of an application (a manifest's `metadata.name`).
    AppName,
    "app"
);
name_type!(
    /// The name of a component inside an application manifest.
    ComponentName,
    "component"
);
name_type!(
    /// A host's identity: its public key (an nkey-style string starting with `N`).
    HostId,
    "host"
);
name_type!(
    /// A label key on a host (`site`, `zone`, `arch`, ...).
    LabelKey,
    "label"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["default", "hello-world", "a_b", "A1", "x"] {
            assert!(LatticeName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_subject_syntax_whitespace_and_control() {
        for bad in ["a.b", "a*", "a>", "a b", "a\tb", "a\u{0}b", "", "é"] {
            assert!(AppName::new(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn error_suggests_a_fix() {
        let err = ComponentName::new("my.comp").unwrap_err().to_string();
        assert!(err.contains("`my-comp`"), "{err}");
        assert!(err.contains("subject separator"), "{err}");
    }

    #[test]
    fn refuses_long_names() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            LatticeName::new(long),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn serde_refuses_bad_names() {
        let bytes = rmp_serde::to_vec("a.b").unwrap();
        assert!(rmp_serde::from_slice::<AppName>(&bytes).is_err());
    }
}
