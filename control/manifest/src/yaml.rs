//! Reading a YAML tree that remembers where each node came from.
//!
//! [`load`] turns source text into saphyr's [`MarkedYaml`] tree with scalars left as written
//! (so `version: 0.10` stays `"0.10"` and `"1"` is known to be quoted). [`Reader`] then offers
//! typed reads (`mapping`, `string`, `whole_number`, ...) that never stop at a problem: each
//! failed read pushes a [`Diagnostic`] pointing at the node and returns `None`, and the caller
//! carries on with the next field.

use std::borrow::Cow;
use std::collections::BTreeMap;

use saphyr::{AnnotatedMapping, MarkedYaml, Scalar, ScalarStyle, YamlData, YamlLoader};
use saphyr_parser::Parser;

use crate::diagnostic::{Diagnostic, Pos, closest, suggest};

/// A node of the marked tree.
pub(crate) type Node<'a> = MarkedYaml<'a>;

/// Parses `source` into its YAML documents, or the syntax error with its position.
pub(crate) fn load(source: &str) -> Result<Vec<Node<'_>>, Diagnostic> {
    let mut loader: YamlLoader<'_, Node<'_>> = YamlLoader::default();
    // Keep scalars as written; `view` resolves them, so numbers keep their spelling.
    loader.early_parse(false);
    let mut parser = Parser::new_from_str(source);
    let result = parser.load(&mut loader, true);
    let error = result.err().or_else(|| loader.error().cloned());
    if let Some(error) = error {
        let marker = error.marker();
        let pos = Pos {
            line: marker.line(),
            column: marker.col() + 1,
        };
        return Err(Diagnostic::new(
            pos,
            "",
            format!("invalid YAML: {}", error.info()),
        ));
    }
    Ok(loader.into_documents())
}

/// Whether a loaded document holds nothing (no content, only comments, or a lone null).
pub(crate) fn is_empty_document(document: &Node<'_>) -> bool {
    matches!(document.data, YamlData::BadValue) || matches!(view(document), View::Null)
}

/// Where `node` starts, 1-based.
pub(crate) fn pos(node: &Node<'_>) -> Pos {
    let start = node.span.start;
    Pos {
        line: start.line().max(1),
        column: start.col() + 1,
    }
}

/// `parent.key`, or `key` at the top.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub(crate) fn index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// What a node holds, with scalars resolved by the YAML 1.2 core schema.
pub(crate) enum View<'n, 'a> {
    /// `~`, `null` or nothing at all.
    Null,
    /// A scalar, with its text as written.
    Scalar(ScalarView<'n>),
    /// A sequence.
    Seq(&'n [Node<'a>]),
    /// A mapping.
    Map(&'n AnnotatedMapping<'a, Node<'a>>),
    /// Something this crate does not read (custom tags); the message says why.
    Unsupported(String),
}

/// A resolved scalar.
pub(crate) struct ScalarView<'n> {
    /// The text as written (without quotes).
    pub(crate) text: Cow<'n, str>,
    /// What the core schema makes of it.
    pub(crate) kind: ScalarKind,
}

/// The type a scalar resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarKind {
    /// A quoted scalar or one tagged `!!str`: always a string.
    Quoted,
    /// A plain scalar that is not a number or a boolean.
    Text,
    /// A plain integer.
    Int(i64),
    /// A plain floating-point number.
    Float,
    /// A plain boolean.
    Bool,
}

/// Resolves a node.
pub(crate) fn view<'n, 'a>(node: &'n Node<'a>) -> View<'n, 'a> {
    match &node.data {
        YamlData::Representation(text, style, tag) => {
            if let Some(tag) = tag {
                if !tag.is_yaml_core_schema() {
                    return View::Unsupported(format!("the YAML tag `{tag}` is not supported"));
                }
                if tag.suffix == "str" {
                    return View::Scalar(ScalarView {
                        text: Cow::Borrowed(text.as_ref()),
                        kind: ScalarKind::Quoted,
                    });
                }
            }
            if *style != ScalarStyle::Plain {
                return View::Scalar(ScalarView {
                    text: Cow::Borrowed(text.as_ref()),
                    kind: ScalarKind::Quoted,
                });
            }
            let resolved =
                Scalar::parse_from_cow_and_metadata(Cow::Borrowed(text.as_ref()), *style, None);
            resolved_view(Cow::Borrowed(text.as_ref()), resolved)
        }
        // Not produced with early parsing off, but harmless to read.
        YamlData::Value(scalar) => {
            let text = match scalar {
                Scalar::String(s) => Cow::Borrowed(s.as_ref()),
                Scalar::Null => Cow::Borrowed(""),
                Scalar::Boolean(b) => Cow::Owned(b.to_string()),
                Scalar::Integer(i) => Cow::Owned(i.to_string()),
                Scalar::FloatingPoint(f) => Cow::Owned(f.to_string()),
            };
            resolved_view(text, Some(scalar.clone()))
        }
        YamlData::Sequence(items) => View::Seq(items),
        YamlData::Mapping(map) => View::Map(map),
        YamlData::Tagged(tag, _) => {
            View::Unsupported(format!("the YAML tag `{tag}` is not supported"))
        }
        YamlData::Alias(_) | YamlData::BadValue => {
            View::Unsupported("this value could not be read".to_string())
        }
    }
}

fn resolved_view<'n, 'a>(text: Cow<'n, str>, resolved: Option<Scalar<'_>>) -> View<'n, 'a> {
    let kind = match resolved {
        None | Some(Scalar::String(_)) => ScalarKind::Text,
        Some(Scalar::Null) => return View::Null,
        Some(Scalar::Boolean(_)) => ScalarKind::Bool,
        Some(Scalar::Integer(i)) => ScalarKind::Int(i),
        Some(Scalar::FloatingPoint(_)) => ScalarKind::Float,
    };
    View::Scalar(ScalarView { text, kind })
}

/// How a node reads in "expected X, found Y".
pub(crate) fn describe(view: &View<'_, '_>) -> String {
    match view {
        View::Null => "nothing".to_string(),
        View::Scalar(scalar) => match scalar.kind {
            ScalarKind::Quoted | ScalarKind::Text => format!("{:?}", scalar.text),
            ScalarKind::Int(_) | ScalarKind::Float | ScalarKind::Bool => scalar.text.to_string(),
        },
        View::Seq(_) => "a list".to_string(),
        View::Map(_) => "a mapping".to_string(),
        View::Unsupported(why) => why.clone(),
    }
}

/// One `key: value` pair of a mapping whose key is a string.
#[derive(Clone, Copy)]
pub(crate) struct Entry<'n, 'a> {
    /// The key's text.
    pub(crate) key: &'n str,
    /// The key node (for positions).
    pub(crate) key_node: &'n Node<'a>,
    /// The value node.
    pub(crate) value: &'n Node<'a>,
}

/// The fields of a mapping whose allowed keys are known; unknown keys were already reported.
pub(crate) struct Fields<'n, 'a> {
    pos: Pos,
    path: String,
    entries: Vec<Entry<'n, 'a>>,
    /// Allowed keys that an unknown key was reported as a likely typo of.
    suggested: Vec<&'static str>,
}

impl<'n, 'a> Fields<'n, 'a> {
    /// Where the mapping starts.
    pub(crate) fn pos(&self) -> Pos {
        self.pos
    }

    /// The path of field `key`.
    pub(crate) fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn entry(&self, key: &str) -> Option<&Entry<'n, 'a>> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    /// Whether `key` is written at all, even without a value.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.entry(key).is_some()
    }

    /// Where `key` is written.
    pub(crate) fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entry(key).map(|entry| pos(entry.key_node))
    }

    /// The value of `key`, unless it is absent or null (an empty optional field is absent).
    pub(crate) fn optional(&self, key: &str) -> Option<&'n Node<'a>> {
        self.entry(key)
            .map(|entry| entry.value)
            .filter(|value| !matches!(view(value), View::Null))
    }

    /// The value of `key`; reports a missing or empty field (unless an unknown key was already
    /// reported as a likely typo of it).
    pub(crate) fn required(&self, reader: &mut Reader, key: &str) -> Option<&'n Node<'a>> {
        match self.entry(key) {
            // "unknown field `instance`, did you mean `instances`?" already says it.
            None if self.suggested.contains(&key) => None,
            None => {
                reader.push(Diagnostic::new(
                    self.pos,
                    self.path.clone(),
                    format!("missing field `{key}`"),
                ));
                None
            }
            Some(entry) if matches!(view(entry.value), View::Null) => {
                reader.push(Diagnostic::new(
                    pos(entry.key_node),
                    self.path(key),
                    format!("field `{key}` has no value"),
                ));
                None
            }
            Some(entry) => Some(entry.value),
        }
    }
}

/// Typed reads that report problems instead of stopping at them.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    diagnostics: Vec<Diagnostic>,
}

impl Reader {
    /// Records a problem.
    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// Records a problem at `node`.
    pub(crate) fn error(&mut self, node: &Node<'_>, path: &str, message: impl Into<String>) {
        self.push(Diagnostic::new(pos(node), path, message));
    }

    /// The problems found so far.
    pub(crate) fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    /// Whether any problem was found so far.
    pub(crate) fn has_errors(&self) -> bool {
        !self.diagnostics.is_empty()
    }

    /// Reports that `node` is not what was `expected` (e.g. "a list").
    pub(crate) fn wrong_type(&mut self, node: &Node<'_>, path: &str, expected: &str) {
        let message = match view(node) {
            View::Unsupported(why) => why,
            other => format!("expected {expected}, found {}", describe(&other)),
        };
        self.error(node, path, message);
    }

    /// The string-keyed entries of a mapping. Non-string keys and repeated keys are reported and
    /// left out.
    pub(crate) fn entries<'n, 'a>(
        &mut self,
        node: &'n Node<'a>,
        path: &str,
    ) -> Option<Vec<Entry<'n, 'a>>> {
        let View::Map(map) = view(node) else {
            self.wrong_type(node, path, "a mapping");
            return None;
        };
        let mut entries: Vec<Entry<'n, 'a>> = Vec::with_capacity(map.len());
        for (key_node, value) in map.iter() {
            let key = match (&key_node.data, view(key_node)) {
                (YamlData::Representation(text, _, _), View::Scalar(_)) => text.as_ref(),
                _ => {
                    self.wrong_type(key_node, path, "a string as key");
                    continue;
                }
            };
            if entries.iter().any(|entry| entry.key == key) {
                self.error(
                    key_node,
                    &join(path, key),
                    format!("`{key}` is given twice"),
                );
                continue;
            }
            entries.push(Entry {
                key,
                key_node,
                value,
            });
        }
        Some(entries)
    }

    /// A mapping whose keys must be among `allowed`; others are reported with a suggestion.
    pub(crate) fn mapping<'n, 'a>(
        &mut self,
        node: &'n Node<'a>,
        path: &str,
        allowed: &[&'static str],
    ) -> Option<Fields<'n, 'a>> {
        let mut entries = self.entries(node, path)?;
        let mut suggested = Vec::new();
        entries.retain(|entry| {
            let known = allowed.contains(&entry.key);
            if !known {
                suggested.extend(closest(entry.key, allowed));
                self.push(
                    Diagnostic::new(
                        pos(entry.key_node),
                        join(path, entry.key),
                        format!("unknown field `{}`", entry.key),
                    )
                    .with_help(suggest(
                        entry.key,
                        allowed,
                        "allowed fields here are",
                    )),
                );
            }
            known
        });
        Some(Fields {
            pos: pos(node),
            path: path.to_string(),
            entries,
            suggested,
        })
    }

    /// The items of a sequence.
    pub(crate) fn sequence<'n, 'a>(
        &mut self,
        node: &'n Node<'a>,
        path: &str,
    ) -> Option<&'n [Node<'a>]> {
        match view(node) {
            View::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, path, "a list");
                None
            }
        }
    }

    /// A scalar's text: strings, numbers and booleans are all accepted as written.
    pub(crate) fn string(&mut self, node: &Node<'_>, path: &str) -> Option<String> {
        match view(node) {
            View::Scalar(scalar) => Some(scalar.text.into_owned()),
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    /// Like [`Reader::string`], refusing an empty or blank string.
    pub(crate) fn non_empty_string(&mut self, node: &Node<'_>, path: &str) -> Option<String> {
        let text = self.string(node, path)?;
        if text.trim().is_empty() {
            self.error(node, path, "must not be empty");
            return None;
        }
        Some(text)
    }

    /// A whole number that fits in a `u32`.
    pub(crate) fn whole_number(&mut self, node: &Node<'_>, path: &str) -> Option<u32> {
        let view = view(node);
        let View::Scalar(scalar) = &view else {
            self.wrong_type(node, path, "a whole number");
            return None;
        };
        let found = describe(&view);
        let message = format!("expected a whole number, found {found}");
        match scalar.kind {
            ScalarKind::Int(value) => match u32::try_from(value) {
                Ok(value) => return Some(value),
                Err(_) if value < 0 => self.push(
                    Diagnostic::new(pos(node), path, message)
                        .with_help("negative numbers are not allowed here"),
                ),
                Err(_) => self.error(
                    node,
                    path,
                    format!("{found} is too large; at most {} is allowed", u32::MAX),
                ),
            },
            ScalarKind::Quoted if scalar.text.trim().parse::<u32>().is_ok() => self.push(
                Diagnostic::new(pos(node), path, message)
                    .with_help(format!("remove the quotes: {}", scalar.text.trim())),
            ),
            _ => self.error(node, path, message),
        }
        None
    }

    /// A plain `true` or `false`.
    pub(crate) fn boolean(&mut self, node: &Node<'_>, path: &str) -> Option<bool> {
        let view = view(node);
        if let View::Scalar(scalar) = &view
            && matches!(scalar.kind, ScalarKind::Bool | ScalarKind::Quoted)
        {
            match scalar.text.trim() {
                "true" if matches!(scalar.kind, ScalarKind::Bool) => return Some(true),
                "false" if matches!(scalar.kind, ScalarKind::Bool) => return Some(false),
                "true" | "false" => {
                    self.push(
                        Diagnostic::new(
                            pos(node),
                            path,
                            "expected true or false, found a quoted string",
                        )
                        .with_help(format!("remove the quotes: {}", scalar.text.trim())),
                    );
                    return None;
                }
                _ => {}
            }
        }
        let found = describe(&view);
        self.error(node, path, format!("expected true or false, found {found}"));
        None
    }

    /// A flat map of strings; numbers and booleans are kept as written.
    pub(crate) fn string_map(
        &mut self,
        node: &Node<'_>,
        path: &str,
    ) -> Option<BTreeMap<String, String>> {
        let entries = self.entries(node, path)?;
        let mut map = BTreeMap::new();
        let mut ok = true;
        for entry in entries {
            match self.string(entry.value, &join(path, entry.key)) {
                Some(value) => {
                    map.insert(entry.key.to_string(), value);
                }
                None => ok = false,
            }
        }
        ok.then_some(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(source: &str) -> Node<'_> {
        load(source)
            .expect("valid YAML")
            .into_iter()
            .next()
            .expect("one document")
    }

    #[test]
    fn scalars_keep_their_spelling() {
        let doc = first("a: 0.10\nb: \"1\"\nc: 0x1F\nd: true\ne: hello\nf: ~\ng: !!str 5\n");
        let mut reader = Reader::default();
        let fields = reader
            .mapping(&doc, "", &["a", "b", "c", "d", "e", "f", "g"])
            .expect("a mapping");
        let text = |key: &str| {
            let node = fields.optional(key).expect("present");
            match view(node) {
                View::Scalar(s) => (s.text.into_owned(), s.kind),
                _ => panic!("{key} is not a scalar"),
            }
        };
        assert_eq!(text("a"), ("0.10".to_string(), ScalarKind::Float));
        assert_eq!(text("b"), ("1".to_string(), ScalarKind::Quoted));
        assert_eq!(text("c"), ("0x1F".to_string(), ScalarKind::Int(31)));
        assert_eq!(text("d"), ("true".to_string(), ScalarKind::Bool));
        assert_eq!(text("e"), ("hello".to_string(), ScalarKind::Text));
        assert_eq!(text("g"), ("5".to_string(), ScalarKind::Quoted));
        assert!(fields.optional("f").is_none());
        assert!(fields.has("f"));
        assert!(!reader.has_errors());
    }

    #[test]
    fn positions_are_one_based() {
        let doc = first("top:\n  inner: 1\n");
        let mut reader = Reader::default();
        let top = reader.mapping(&doc, "", &["top"]).expect("a mapping");
        let inner = top.optional("top").expect("present");
        let inner = reader.mapping(inner, "top", &["inner"]).expect("a mapping");
        assert_eq!(top.key_pos("top"), Some(Pos { line: 1, column: 1 }));
        assert_eq!(inner.key_pos("inner"), Some(Pos { line: 2, column: 3 }));
        let value = inner.optional("inner").expect("present");
        assert_eq!(
            pos(value),
            Pos {
                line: 2,
                column: 10
            }
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = load("a: [1, 2\nb: 3\n").expect_err("unclosed flow sequence");
        assert!(err.message.starts_with("invalid YAML"), "{err}");
        assert!(err.line >= 1);
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let err = load("a: 1\na: 2\n").expect_err("duplicate key");
        assert_eq!((err.line, err.column), (2, 1), "{err}");
    }

    #[test]
    fn keys_must_be_scalars_and_unique() {
        let doc = first("\"a\": 1\na: 2\n? [x]\n: 3\n!Custom k: 4\nb: 5\n");
        let mut reader = Reader::default();
        let entries = reader.entries(&doc, "m").expect("a mapping");
        let keys: Vec<&str> = entries.iter().map(|e| e.key).collect();
        assert_eq!(keys, ["a", "b"]);
        let messages: Vec<String> = reader
            .into_diagnostics()
            .into_iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            messages,
            [
                "line 2, column 1: m.a: `a` is given twice",
                "line 3, column 3: m: expected a string as key, found a list",
                "line 5, column 1: m: the YAML tag `!Custom` is not supported",
            ]
        );
    }

    #[test]
    fn whole_numbers() {
        let doc = first("a: 3\nb: -1\nc: two\nd: \"4\"\ne: 1.5\nf: 99999999999\n");
        let mut reader = Reader::default();
        let fields = reader
            .mapping(&doc, "", &["a", "b", "c", "d", "e", "f"])
            .expect("a mapping");
        let mut read = |key: &str| {
            let node = fields.optional(key).expect("present");
            reader.whole_number(node, key)
        };
        assert_eq!(read("a"), Some(3));
        for key in ["b", "c", "d", "e", "f"] {
            assert_eq!(read(key), None, "{key}");
        }
        let messages: Vec<String> = reader
            .into_diagnostics()
            .into_iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(messages.len(), 5);
        assert!(messages[1].contains("found \"two\""), "{messages:?}");
        assert!(messages[2].contains("remove the quotes"), "{messages:?}");
        assert!(messages[4].contains("too large"), "{messages:?}");
    }
}
