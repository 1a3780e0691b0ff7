//! What a component imports and exports, by WIT name (`wasi:http/incoming-handler@0.2.0`),
//! read from its top-level import and export sections.

use wasmparser::{Parser, Payload};

use crate::claims::{VerifyError, check_component_header};

/// A component's top-level imports and exports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Interfaces {
    /// Imported names.
    pub imports: Vec<String>,
    /// Exported names.
    pub exports: Vec<String>,
}

impl Interfaces {
    /// Whether some export is `interface` at any version (`wasi:http/incoming-handler` matches
    /// `wasi:http/incoming-handler@0.2.6`).
    pub fn exports_interface(&self, interface: &str) -> bool {
        self.exports
            .iter()
            .any(|e| e.split('@').next() == Some(interface))
    }
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
