//! Checks that span components: unique names, link targets that exist, one scaler per component.
//!
//! While reading, [`parse`](crate::parse) notes what these checks need in an [`Outline`], keeping
//! names as written even when they are invalid, so one bad component does not hide the problems
//! of others (or cause spurious ones). [`check`] is a pure function of the outline.

use std::collections::HashMap;

use crate::diagnostic::{Diagnostic, Pos, backticked, closest};
use crate::model::ComponentKind;

/// A value with the place it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located<T> {
    pub(crate) value: T,
    pub(crate) pos: Pos,
    pub(crate) path: String,
}

/// What the cross-component checks need to know about a manifest.
#[derive(Debug, Default)]
pub(crate) struct Outline {
    pub(crate) components: Vec<ComponentOutline>,
}

/// What the cross-component checks need to know about one component.
#[derive(Debug, Default)]
pub(crate) struct ComponentOutline {
    /// Where the component's mapping starts.
    pub(crate) pos: Pos,
    /// `spec.components[i]`.
    pub(crate) path: String,
    /// The name as written, valid or not.
    pub(crate) name: Option<Located<String>>,
    /// The component's type, if it could be read.
    pub(crate) kind: Option<ComponentKind>,
    /// The scaler traits (`spreadscaler` / `daemonscaler`), at their `type`.
    pub(crate) scalers: Vec<Located<&'static str>>,
    /// Link target names (only those that are valid names), at the name.
    pub(crate) targets: Vec<Located<String>>,
    /// Whether some trait's type could not be read (then "no scaler" would be noise).
    pub(crate) unreadable_traits: bool,
}

impl ComponentOutline {
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("component `{}`", name.value),
            None => "this component".to_string(),
        }
    }
}

/// Every cross-component problem in `outline`.
pub(crate) fn check(outline: &Outline) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    unique_names(outline, &mut diagnostics);
    link_targets(outline, &mut diagnostics);
    scalers(outline, &mut diagnostics);
    diagnostics
}

fn unique_names(outline: &Outline, diagnostics: &mut Vec<Diagnostic>) {
    let mut first: HashMap<&str, &Located<String>> = HashMap::new();
    for name in outline.components.iter().filter_map(|c| c.name.as_ref()) {
        match first.get(name.value.as_str()) {
            Some(earlier) => diagnostics.push(
                Diagnostic::new(
                    name.pos,
                    name.path.clone(),
                    format!("duplicate component name `{}`", name.value),
                )
                .with_help(format!(
                    "`{}` is first used at line {}, column {}; give each component its own name",
                    name.value, earlier.pos.line, earlier.pos.column
                )),
            ),
            None => {
                first.insert(&name.value, name);
            }
        }
    }
}

fn link_targets(outline: &Outline, diagnostics: &mut Vec<Diagnostic>) {
    let mut names: Vec<&str> = Vec::new();
    for name in outline.components.iter().filter_map(|c| c.name.as_ref()) {
        if !names.contains(&name.value.as_str()) {
            names.push(&name.value);
        }
    }
    for target in outline.components.iter().flat_map(|c| &c.targets) {
        if names.contains(&target.value.as_str()) {
            continue;
        }
        let help = match closest(&target.value, &names) {
            Some(name) => format!("did you mean `{name}`?"),
            None if names.is_empty() => "this manifest has no valid component names".to_string(),
            None => format!("components in this manifest: {}", backticked(&names)),
        };
        diagnostics.push(
            Diagnostic::new(
                target.pos,
                target.path.clone(),
                format!("no component named `{}` in this manifest", target.value),
            )
            .with_help(help),
        );
    }
}

fn scalers(outline: &Outline, diagnostics: &mut Vec<Diagnostic>) {
    for component in &outline.components {
        if let Some((first, rest)) = component.scalers.split_first() {
            for extra in rest {
                diagnostics.push(
                    Diagnostic::new(
                        extra.pos,
                        extra.path.clone(),
                        format!(
                            "{} already has a `{}` (line {}); only one scaler trait is allowed",
                            component.label(),
                            first.value,
                            first.pos.line
                        ),
                    )
                    .with_help("keep a single `spreadscaler` or `daemonscaler`"),
                );
            }
        } else if component.kind == Some(ComponentKind::Component) && !component.unreadable_traits {
            diagnostics.push(
                Diagnostic::new(
                    component.pos,
                    component.path.clone(),
                    format!(
                        "{} has no scaler trait, so it would never run",
                        component.label()
                    ),
                )
                .with_help("add a trait `type: spreadscaler` with `properties: { instances: 1 }`"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, value: &str) -> Located<String> {
        Located {
            value: value.to_string(),
            pos: Pos { line, column: 1 },
            path: format!("line{line}"),
        }
    }

    fn component(name: &str, line: usize) -> ComponentOutline {
        ComponentOutline {
            pos: Pos { line, column: 1 },
            name: Some(at(line, name)),
            kind: Some(ComponentKind::Capability),
            ..ComponentOutline::default()
        }
    }

    #[test]
    fn duplicate_names_point_at_the_second() {
        let outline = Outline {
            components: vec![component("a", 1), component("a", 5)],
        };
        let diagnostics = check(&outline);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert_eq!(diagnostics[0].line, 5);
        assert!(
            diagnostics[0]
                .help
                .as_deref()
                .is_some_and(|h| h.contains("line 1"))
        );
    }

    #[test]
    fn missing_target_suggests_a_close_name() {
        let mut source = component("server", 1);
        source.targets.push(at(3, "helo"));
        let outline = Outline {
            components: vec![source, component("hello", 9)],
        };
        let diagnostics = check(&outline);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert_eq!(
            diagnostics[0].help.as_deref(),
            Some("did you mean `hello`?")
        );
    }

    #[test]
    fn component_needs_exactly_one_scaler() {
        let mut none = component("a", 1);
        none.kind = Some(ComponentKind::Component);
        let mut unreadable = component("b", 5);
        unreadable.kind = Some(ComponentKind::Component);
        unreadable.unreadable_traits = true;
        let mut two = component("c", 9);
        two.scalers = vec![
            Located {
                value: "spreadscaler",
                pos: Pos {
                    line: 10,
                    column: 1,
                },
                path: String::new(),
            },
            Located {
                value: "daemonscaler",
                pos: Pos {
                    line: 12,
                    column: 1,
                },
                path: String::new(),
            },
        ];
        let outline = Outline {
            components: vec![none, unreadable, two],
        };
        let lines: Vec<usize> = check(&outline).iter().map(|d| d.line).collect();
        assert_eq!(lines, [1, 12]);
    }
}
