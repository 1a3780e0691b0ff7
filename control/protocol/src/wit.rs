//! What a component imports and exports, by WIT name (`wasi:http/incoming-handler@0.2.0`),
//! read from its top-level import and export sections; and which imported functions return
//! data (read from the validated component's types), since only one-way functions can be
//! queued. [`InterfaceName`] is an interface's name parsed once (namespace, package, interface,
//! version).

mod name;

pub use name::{InterfaceName, InterfaceNameError};
use wasmparser::component_types::{ComponentDefinedType, ComponentEntityType, ComponentValType};
use wasmparser::{Parser, Payload, Validator, WasmFeatures};

use crate::claims::{VerifyError, check_component_header};

/// A component's top-level imports and exports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Interfaces {
    /// Imported names.
    pub imports: Vec<String>,
    /// Exported names.
    pub exports: Vec<String>,
    /// Imported functions that return data a caller waits for (anything but no result or
    /// `result<_, E>`), as `<import name>#<function>`. Filled only by [`returning_data`] (it
    /// validates the whole component, which reading the sections does not need); empty when
    /// not asked for or when the types could not be read (the host checks again when it links).
    #[serde(default)]
    pub returning_data: Vec<String>,
}

impl Interfaces {
    /// Whether some export is `interface` at any version (`wasi:http/incoming-handler` matches
    /// `wasi:http/incoming-handler@0.2.6`).
    pub fn exports_interface(&self, interface: &str) -> bool {
        self.exports.iter().any(|e| unversioned(e) == interface)
    }

    /// The functions of imported `interface` (at any version) that return data.
    pub fn functions_returning_data<'a>(
        &'a self,
        interface: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.returning_data.iter().filter_map(move |f| {
            let (import, function) = f.split_once('#')?;
            (unversioned(import) == interface).then_some(function)
        })
    }
}

/// A WIT name without its version: `wasi:http/types@0.2.0` -> `wasi:http/types`.
pub fn unversioned(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// Reads the imports and exports of a component.
pub fn component_interfaces(bytes: &[u8]) -> Result<Interfaces, VerifyError> {
    check_component_header(bytes)?;
    let mut out = Interfaces::default();
    // Nested modules and components appear in the payload stream between their own `Version`
    // and `End`; only depth 1 is the component itself.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| VerifyError::Malformed(e.to_string()))?;
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| VerifyError::Malformed(e.to_string()))?;
                    out.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| VerifyError::Malformed(e.to_string()))?;
                    out.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The imported functions of `imports` that return data (see [`Interfaces::returning_data`]).
pub fn returning_data(bytes: &[u8], imports: &[String]) -> Vec<String> {
    let Ok(types) = Validator::new_with_features(WasmFeatures::all()).validate_all(bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for import in imports {
        let Some(ComponentEntityType::Instance(id)) =
            types.component_item_for_import(import).map(|item| item.ty)
        else {
            continue;
        };
        for (name, item) in &types[id].exports {
            let ComponentEntityType::Func(f) = item.ty else {
                continue;
            };
            let one_way = match types[f].result {
                None => true,
                Some(ComponentValType::Type(t)) => {
                    matches!(types[t], ComponentDefinedType::Result { ok: None, .. })
                }
                Some(ComponentValType::Primitive(_)) => false,
            };
            if !one_way {
                out.push(format!("{import}#{name}"));
            }
        }
    }
    out
}
