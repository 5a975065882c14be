//! Located errors: every problem a stack has, each naming the file line (or the command-line
//! argument) that supplied the offending value and the dotted key it sits at.

use std::fmt;
use std::path::PathBuf;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    /// A position in the stack file (1-based line and column, the column counted in characters).
    File {
        path: PathBuf,
        line: usize,
        col: usize,
    },
    /// The stack file as a whole (it cannot be read).
    Path(PathBuf),
    /// A command-line argument, as typed: `--set compute.spot.max_vcpus=0`, `--env staging`.
    Arg(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { path, line, col } => write!(f, "{}:{line}:{col}", path.display()),
            Location::Path(path) => write!(f, "{}", path.display()),
            Location::Arg(arg) => write!(f, "{arg}"),
        }
    }
}

/// One error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Location,
    pub message: String,
    /// The dotted key path of the offending value (`compute.spot.max_vcpus`), when there is one.
    pub key: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: error: {}", self.location, self.message)?;
        if let Some(key) = &self.key {
            if !key.is_empty() {
                write!(f, " (key `{key}`)")?;
            }
        }
        Ok(())
    }
}

/// Every error a stack has, in file order (then command-line arguments). Never empty when
/// returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn push(&mut self, location: Location, message: impl Into<String>, key: Option<String>) {
        self.0.push(Diagnostic {
            location,
            message: message.into(),
            key,
        });
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// File positions first, in order, then arguments; exact repeats dropped.
    pub(crate) fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| a.location.cmp(&b.location));
        self.0.dedup();
        self
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Collects errors while a stack loads; turns tree origins into locations.
pub(crate) struct Ctx {
    pub path: PathBuf,
    pub diags: Diagnostics,
}

impl Ctx {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            diags: Diagnostics::new(),
        }
    }

    pub fn location(&self, at: &crate::stack::tree::Origin) -> Location {
        match at {
            crate::stack::tree::Origin::File { line, col } => Location::File {
                path: self.path.clone(),
                line: *line,
                col: *col,
            },
            crate::stack::tree::Origin::Arg(arg) => Location::Arg(arg.to_string()),
        }
    }

    pub fn err(&mut self, at: &crate::stack::tree::Origin, key: &str, msg: impl Into<String>) {
        let location = self.location(at);
        self.diags.push(location, msg, Some(key.to_string()));
    }
}
