//! The pinned Go tools the suite runs (hack/tools: kube-apiserver, kubectl, cosign, oras), built
//! into `hack/tools/bin` by `hack/tools.sh` (`make tools`), or taken from `PROVENANT_TOOLS_BIN`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The directory holding the tools.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("PROVENANT_TOOLS_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/tools/bin"),
    }
}

/// The path of tool `name`, or an error that says how to build it.
pub fn path(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build the pinned Go tools with `make tools` (hack/tools.sh), \
             or point PROVENANT_TOOLS_BIN at a directory holding {name}",
            path.display()
        );
    }
    Ok(path)
}
