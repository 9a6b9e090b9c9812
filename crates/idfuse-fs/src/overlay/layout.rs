//! The layers of an overlay as the user gave them: `lowerdir=L1:L2:…`
//! (leftmost on top), and `upperdir`/`workdir` for a writable overlay.
//! (A minimal version; the full set of layout refusals lives on the
//! `h-overlay-tests` branch and replaces this file at merge.)

use std::path::{Path, PathBuf};

/// The layers of an overlay.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The read-only layers, leftmost (index 0) on top as in the kernel;
    /// canonical paths of existing directories.
    pub lowers: Vec<PathBuf>,
    /// The writable layer; `None` (with `work` `None`) for a read-only
    /// overlay.
    pub upper: Option<PathBuf>,
    /// Where copy-ups are built before they are renamed into `upper`.
    pub work: Option<PathBuf>,
}

/// Why a layout is refused.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// No lower layer was given.
    #[error("overlay needs at least one lower layer: -o lowerdir=DIR[:DIR…]")]
    NoLower,
    /// A layer does not exist or is not a directory.
    #[error("{what} {path} is not an existing directory ({why}); create it or fix the path")]
    NotADirectory {
        /// which layer option
        what: &'static str,
        /// the path given
        path: PathBuf,
        /// the error met
        why: String,
    },
    /// upperdir without workdir or the reverse.
    #[error("upperdir and workdir go together: give both for a writable overlay, neither for a read-only one")]
    UpperWithoutWork,
}

fn dir(what: &'static str, p: &Path) -> Result<PathBuf, LayoutError> {
    let bad = |why: String| LayoutError::NotADirectory {
        what,
        path: p.to_path_buf(),
        why,
    };
    let c = std::fs::canonicalize(p).map_err(|e| bad(e.to_string()))?;
    if !c.is_dir() {
        return Err(bad("not a directory".into()));
    }
    Ok(c)
}

impl Layout {
    /// The layout from the options' values: `lowerdir` as `L1:L2:…`.
    pub fn from_options(
        lowerdir: &str,
        upperdir: Option<&Path>,
        workdir: Option<&Path>,
        _mountpoint: &Path,
    ) -> Result<Layout, LayoutError> {
        let lowers = lowerdir
            .split(':')
            .filter(|l| !l.is_empty())
            .map(|l| dir("lowerdir", Path::new(l)))
            .collect::<Result<Vec<_>, _>>()?;
        if lowers.is_empty() {
            return Err(LayoutError::NoLower);
        }
        let (upper, work) = match (upperdir, workdir) {
            (None, None) => (None, None),
            (Some(u), Some(w)) => (Some(dir("upperdir", u)?), Some(dir("workdir", w)?)),
            _ => return Err(LayoutError::UpperWithoutWork),
        };
        Ok(Layout {
            lowers,
            upper,
            work,
        })
    }
}
