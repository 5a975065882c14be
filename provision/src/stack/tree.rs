//! A TOML tree that remembers, for every value, where it was written. Overlays and `--set` move
//! whole nodes, so after merging each value still points at the line (or argument) that supplied
//! it.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Where a value (or key) was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Origin {
    File {
        line: usize,
        col: usize,
    },
    /// A command-line argument, as typed (`--set a.b=c`).
    Arg(Arc<str>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Table(BTreeMap<String, Node>),
    Array(Vec<Node>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    /// A value already reported as wrong: later checks skip it silently.
    Invalid,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub val: Val,
    /// Where the value was written (a table: its header, or its first key when it has none).
    pub at: Origin,
    /// Where the key naming this value was written.
    pub key_at: Origin,
}

impl Val {
    /// How an error message names the kind of a value.
    pub fn kind(&self) -> &'static str {
        match self {
            Val::Table(_) => "a table",
            Val::Array(_) => "an array",
            Val::Str(_) => "a string",
            Val::Int(_) => "an integer",
            Val::Float(_) => "a float",
            Val::Bool(_) => "a boolean",
            Val::Datetime(_) => "a date-time",
            Val::Invalid => "an invalid value",
        }
    }
}

impl Node {
    pub fn table(&self) -> Option<&BTreeMap<String, Node>> {
        match &self.val {
            Val::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn table_mut(&mut self) -> Option<&mut BTreeMap<String, Node>> {
        match &mut self.val {
            Val::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.table().and_then(|t| t.get(key))
    }

    pub fn is_table(&self) -> bool {
        matches!(self.val, Val::Table(_))
    }
}

/// Byte offsets to 1-based line and character column.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }

    pub fn origin(&self, offset: usize) -> Origin {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let end = offset.min(self.text.len());
        let col = self
            .text
            .get(start..end)
            .map_or(end - start, |s| s.chars().count())
            + 1;
        Origin::File { line, col }
    }

    fn span(&self, span: Option<std::ops::Range<usize>>, fallback: &Origin) -> Origin {
        span.map_or_else(|| fallback.clone(), |s| self.origin(s.start))
    }
}

/// Converts a parsed document into a located tree.
pub(crate) fn from_document(doc: &toml_edit::Document<&str>, index: &LineIndex<'_>) -> Node {
    let root_at = Origin::File { line: 1, col: 1 };
    let mut node = table_node(doc.as_table(), index, &root_at);
    node.at = root_at.clone();
    node.key_at = root_at;
    node
}

fn table_node(table: &toml_edit::Table, index: &LineIndex<'_>, key_at: &Origin) -> Node {
    let mut entries = BTreeMap::new();
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let k_at = index.span(key.span(), key_at);
        if let Some(child) = item_node(item, index, &k_at) {
            entries.insert(name.to_string(), child);
        }
    }
    // A table without a header (`a.b.c = 1` dotted keys, or the implicit parent of `[a.b]`)
    // is located at its key.
    let at = table
        .span()
        .map_or_else(|| key_at.clone(), |s| index.origin(s.start));
    Node {
        val: Val::Table(entries),
        at,
        key_at: key_at.clone(),
    }
}

fn item_node(item: &toml_edit::Item, index: &LineIndex<'_>, key_at: &Origin) -> Option<Node> {
    match item {
        toml_edit::Item::None => None,
        toml_edit::Item::Value(v) => Some(value_node(v, index, key_at)),
        toml_edit::Item::Table(t) => Some(table_node(t, index, key_at)),
        toml_edit::Item::ArrayOfTables(a) => {
            let at = index.span(a.span(), key_at);
            let items = a.iter().map(|t| table_node(t, index, key_at)).collect();
            Some(Node {
                val: Val::Array(items),
                at,
                key_at: key_at.clone(),
            })
        }
    }
}

/// A scalar's value; `None` for arrays and inline tables, whose elements are nodes.
fn scalar(value: &toml_edit::Value) -> Option<Val> {
    Some(match value {
        toml_edit::Value::String(s) => Val::Str(s.value().clone()),
        toml_edit::Value::Integer(i) => Val::Int(*i.value()),
        toml_edit::Value::Float(x) => Val::Float(*x.value()),
        toml_edit::Value::Boolean(b) => Val::Bool(*b.value()),
        toml_edit::Value::Datetime(d) => Val::Datetime(d.value().to_string()),
        toml_edit::Value::Array(_) | toml_edit::Value::InlineTable(_) => return None,
    })
}

fn value_node(value: &toml_edit::Value, index: &LineIndex<'_>, key_at: &Origin) -> Node {
    let at = index.span(value.span(), key_at);
    let val = scalar(value).unwrap_or_else(|| match value {
        toml_edit::Value::Array(a) => {
            Val::Array(a.iter().map(|v| value_node(v, index, &at)).collect())
        }
        toml_edit::Value::InlineTable(t) => {
            let mut entries = BTreeMap::new();
            for (name, _) in t.iter() {
                let Some((key, item)) = t.get_key_value(name) else {
                    continue;
                };
                let k_at = index.span(key.span(), &at);
                if let Some(child) = item_node(item, index, &k_at) {
                    entries.insert(name.to_string(), child);
                }
            }
            Val::Table(entries)
        }
        _ => unreachable!("scalar() answers every other kind of value"),
    });
    Node {
        val,
        at,
        key_at: key_at.clone(),
    }
}

/// A value typed on the command line (`--set`), every node located at that argument.
pub(crate) fn from_value(value: &toml_edit::Value, at: &Origin) -> Node {
    let val = scalar(value).unwrap_or_else(|| match value {
        toml_edit::Value::Array(a) => Val::Array(a.iter().map(|v| from_value(v, at)).collect()),
        toml_edit::Value::InlineTable(t) => Val::Table(
            t.iter()
                .map(|(k, v)| (k.to_string(), from_value(v, at)))
                .collect(),
        ),
        _ => unreachable!("scalar() answers every other kind of value"),
    });
    Node {
        val,
        at: at.clone(),
        key_at: at.clone(),
    }
}

/// Deep merge (docs/design.md, "Resolution order"): tables merge key by key, anything else
/// replaces.
pub(crate) fn merge(base: &mut Node, over: Node) {
    match (&mut base.val, over.val) {
        (Val::Table(b), Val::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, val) => {
            base.val = val;
            base.at = over.at;
            base.key_at = over.key_at;
        }
    }
}

/// The GPU overlay (docs/design.md, "Resolution order", step 4): every `gpu` sub-table below the
/// root is merged onto its parent when `on`, dropped otherwise.
pub(crate) fn apply_gpu(node: &mut Node, on: bool, is_root: bool) {
    let Some(table) = node.table_mut() else {
        return;
    };
    let overlay = if !is_root && table.get("gpu").is_some_and(Node::is_table) {
        table.remove("gpu")
    } else {
        None
    };
    for child in table.values_mut() {
        apply_gpu(child, on, false);
    }
    if let (Some(overlay), true) = (overlay, on) {
        merge(node, overlay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Node {
        let doc = toml_edit::Document::parse(text).unwrap();
        from_document(&doc, &LineIndex::new(text))
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let node = parse("a = \"é\"\nb = 1\n  c = \"ü\" \n");
        assert_eq!(node.get("b").unwrap().at, Origin::File { line: 2, col: 5 });
        assert_eq!(
            node.get("c").unwrap().key_at,
            Origin::File { line: 3, col: 3 }
        );
        assert_eq!(node.get("c").unwrap().at, Origin::File { line: 3, col: 7 });
    }

    #[test]
    fn merge_keeps_the_origin_of_each_value() {
        let mut base = parse("[t]\nx = 1\ny = [1, 2]\n[t.u]\nz = 1\n");
        let over = parse("\n\n\n\n\n[t]\ny = [3]\nu.w = 2\n");
        merge(&mut base, over);
        let t = base.get("t").unwrap();
        assert_eq!(t.get("x").unwrap().at, Origin::File { line: 2, col: 5 });
        // Arrays replace, they do not concatenate.
        assert!(matches!(&t.get("y").unwrap().val, Val::Array(a) if a.len() == 1));
        assert_eq!(t.get("y").unwrap().at, Origin::File { line: 7, col: 5 });
        let u = t.get("u").unwrap();
        assert!(u.get("z").is_some() && u.get("w").is_some());
    }

    #[test]
    fn gpu_tables_merge_when_on_and_vanish_when_off() {
        let text = "gpu = true\n[a]\nx = 1\n[a.gpu]\nx = 2\n[a.b]\ny = 1\n[a.b.gpu]\ny = 3\n";
        let mut on = parse(text);
        apply_gpu(&mut on, true, true);
        assert_eq!(on.get("a").unwrap().get("x").unwrap().val, Val::Int(2));
        assert_eq!(
            on.get("a").unwrap().get("b").unwrap().get("y").unwrap().val,
            Val::Int(3)
        );
        assert!(on.get("a").unwrap().get("gpu").is_none());
        // The root's `gpu` is the switch, not an overlay.
        assert_eq!(on.get("gpu").unwrap().val, Val::Bool(true));
        let mut off = parse(text);
        apply_gpu(&mut off, false, true);
        assert_eq!(off.get("a").unwrap().get("x").unwrap().val, Val::Int(1));
        assert!(off.get("a").unwrap().get("gpu").is_none());
        assert!(off.get("a").unwrap().get("b").unwrap().get("gpu").is_none());
    }
}
