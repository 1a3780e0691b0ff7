//! WIT interface names, parsed once: `namespace:package/interface`, optionally `@version`.

use std::fmt;

/// A WIT interface name such as `wasi:http/incoming-handler@0.2.0` or `example:greeter/greet`.
/// On the wire it is the name as written.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterfaceName {
    text: String,
    /// Where `:` is (end of the namespace).
    colon: usize,
    /// Where `/` is (end of the package).
    slash: usize,
    /// Where `@` is, when there is a version.
    at: Option<usize>,
}

/// Why a text is not an interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a WIT interface name: write `namespace:package/interface`, optionally with `@version` (e.g. `wasi:keyvalue/store@0.2.0-draft`)"
)]
pub struct InterfaceNameError(String);

impl InterfaceName {
    /// Parses `namespace:package/interface[@version]`; each part non-empty, no spaces.
    pub fn parse(text: &str) -> Result<Self, InterfaceNameError> {
        let refuse = || InterfaceNameError(text.to_string());
        if text.is_empty() || text.chars().any(char::is_whitespace) {
            return Err(refuse());
        }
        let at = text.find('@');
        let name = &text[..at.unwrap_or(text.len())];
        let colon = name.find(':').ok_or_else(refuse)?;
        let slash = name.find('/').ok_or_else(refuse)?;
        let version_empty = at.is_some_and(|at| at + 1 == text.len());
        if colon == 0
            || slash <= colon + 1
            || slash + 1 == name.len()
            || name[slash + 1..].contains(['/', ':'])
            || version_empty
        {
            return Err(refuse());
        }
        Ok(Self {
            text: text.to_string(),
            colon,
            slash,
            at,
        })
    }

    /// The namespace: `wasi` in `wasi:http/types`.
    pub fn namespace(&self) -> &str {
        &self.text[..self.colon]
    }

    /// The package: `http` in `wasi:http/types`.
    pub fn package(&self) -> &str {
        &self.text[self.colon + 1..self.slash]
    }

    /// The interface: `types` in `wasi:http/types`.
    pub fn interface(&self) -> &str {
        &self.text[self.slash + 1..self.at.unwrap_or(self.text.len())]
    }

    /// The version, if written: `0.2.0` in `wasi:http/types@0.2.0`.
    pub fn version(&self) -> Option<&str> {
        self.at.map(|at| &self.text[at + 1..])
    }

    /// `namespace:package`, e.g. `wasi:http`.
    pub fn package_name(&self) -> &str {
        &self.text[..self.slash]
    }

    /// The name without its version: `wasi:http/types@0.2.0` → `wasi:http/types`.
    pub fn unversioned(&self) -> &str {
        &self.text[..self.at.unwrap_or(self.text.len())]
    }

    /// The same name without its version.
    pub fn without_version(&self) -> Self {
        Self {
            text: self.unversioned().to_string(),
            at: None,
            ..*self
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for InterfaceName {
    type Error = InterfaceNameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<InterfaceName> for String {
    fn from(value: InterfaceName) -> Self {
        value.text
    }
}

impl std::str::FromStr for InterfaceName {
    type Err = InterfaceNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InterfaceName({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_versioned_name() {
        let n = InterfaceName::parse("wasi:keyvalue/store@0.2.0-draft").unwrap();
        assert_eq!(n.namespace(), "wasi");
        assert_eq!(n.package(), "keyvalue");
        assert_eq!(n.interface(), "store");
        assert_eq!(n.version(), Some("0.2.0-draft"));
        assert_eq!(n.package_name(), "wasi:keyvalue");
        assert_eq!(n.unversioned(), "wasi:keyvalue/store");
        assert_eq!(n.without_version().as_str(), "wasi:keyvalue/store");
        assert_eq!(n.without_version().version(), None);
        assert_eq!(n.to_string(), "wasi:keyvalue/store@0.2.0-draft");
    }

    #[test]
    fn unversioned_names_and_refusals() {
        let n = InterfaceName::parse("example:greeter/greet").unwrap();
        assert_eq!(
            (n.namespace(), n.package(), n.interface(), n.version()),
            ("example", "greeter", "greet", None)
        );
        for bad in [
            "",
            "greet",
            "example:greeter",
            ":greeter/greet",
            "example:/greet",
            "example:greeter/",
            "example:greeter/greet@",
            "example:greeter/a/b",
            "example/greet:x",
            "example:greeter/gr eet",
        ] {
            let err = InterfaceName::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("namespace:package/interface"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn travels_as_the_name_written() {
        let n = InterfaceName::parse("wasi:http/incoming-handler@0.2.0").unwrap();
        let bytes = rmp_serde::to_vec(&n).unwrap();
        assert_eq!(
            bytes,
            rmp_serde::to_vec("wasi:http/incoming-handler@0.2.0").unwrap()
        );
        let back: InterfaceName = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, n);
        assert!(
            rmp_serde::from_slice::<InterfaceName>(&rmp_serde::to_vec("nope").unwrap()).is_err()
        );
    }
}
