//! `lattice ctl deploy`'s image references: a component whose `image:` is an OCI reference
//! (`registry/org/name:tag`, `...@sha256:<hex>`, `oci://...`) or a file (`file://PATH`,
//! relative to the manifest's directory) is fetched here, checked as `lattice push` checks, and
//! stored in the lattice's artifact store; the manifest sent to the control plane then names
//! its digest.
//!
//! Why here and not in the control plane: the operator's workstation has the registry's
//! credentials and the files; the control plane and the hosts then need neither, and a host
//! fetches only from the lattice (edge autonomy). The manifest is rewritten line by line so its
//! comments and layout stay as written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lattice_manifest::model::ComponentKind;
use lattice_protocol::digest::{Digest, ImageRef};
use lattice_protocol::names::LatticeName;

use crate::args::RegistryArgs;
use crate::oci::{Oci, OciRef};
use crate::push::{check, open};

/// Resolves the OCI and file images of one manifest into the lattice.
#[derive(Debug)]
pub struct Resolve<'a> {
    client: &'a async_nats::Client,
    lattice: &'a LatticeName,
    /// The manifest's directory, against which `file://` paths are read.
    base: PathBuf,
    registry: &'a RegistryArgs,
}

impl<'a> Resolve<'a> {
    /// For the manifest at `manifest`, deployed to `lattice` over `client`.
    pub fn new(
        client: &'a async_nats::Client,
        lattice: &'a LatticeName,
        manifest: &Path,
        registry: &'a RegistryArgs,
    ) -> Self {
        let base = manifest
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Self {
            client,
            lattice,
            base,
            registry,
        }
    }

    /// `yaml` with every OCI and file image of a component replaced by the digest it was stored
    /// under; unchanged (and nothing opened) when there are none.
    pub async fn run(&self, yaml: &str) -> anyhow::Result<String> {
        let refs = external_images(yaml)?;
        if refs.is_empty() {
            return Ok(yaml.to_string());
        }
        // Fetch and check everything before storing anything.
        let oci = Oci::new(self.registry);
        let mut fetched = Vec::new();
        for (image, reference) in &refs {
            let bytes = match reference {
                ImageRef::Oci { reference } => {
                    eprintln!("pulling {image}...");
                    oci.pull(&OciRef::parse(reference)?).await?
                }
                ImageRef::File { path } => self.read(image, path)?,
                _ => continue,
            };
            let tag = check(&format!("image `{image}`"), &bytes)?;
            fetched.push((image.clone(), bytes, tag));
        }
        let store = open(self.client, self.lattice).await?;
        let mut digests = BTreeMap::new();
        for (image, bytes, tag) in fetched {
            let pushed = store
                .push(&bytes, Some(&tag))
                .await
                .with_context(|| format!("storing image `{image}` in the lattice"))?;
            eprintln!("{image} -> {} (tagged {tag})", pushed.digest);
            digests.insert(image, pushed.digest);
        }
        let rewritten = rewrite(yaml, &digests);
        // A reference the line rewrite could not reach (flow style) must not go out as is.
        if let Some((image, _)) = external_images(&rewritten)?.into_iter().next() {
            anyhow::bail!(
                "could not replace image `{image}` in the manifest; write it as `image: {image}` \
                 on a line of its own"
            );
        }
        Ok(rewritten)
    }

    /// The bytes of `file://path`, relative to the manifest's directory.
    fn read(&self, image: &str, path: &str) -> anyhow::Result<Vec<u8>> {
        let full = self.base.join(path);
        std::fs::read(&full).with_context(|| {
            format!(
                "image `{image}`: cannot read {} (file paths are relative to the manifest's \
                 directory, {}); build the component there or fix the path",
                full.display(),
                self.base.display()
            )
        })
    }
}

/// The components' images (not capabilities') that are OCI or file references.
fn external_images(yaml: &str) -> anyhow::Result<BTreeMap<String, ImageRef>> {
    let manifest = lattice_manifest::parse(yaml)
        .map_err(|d| anyhow::anyhow!("the manifest has {} problem(s)", d.len()))?;
    Ok(manifest
        .spec
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Component)
        .filter_map(|c| {
            let image = &c.properties.image;
            match ImageRef::parse(image) {
                Ok(r @ (ImageRef::Oci { .. } | ImageRef::File { .. })) => Some((image.clone(), r)),
                _ => None,
            }
        })
        .collect())
}

/// Replaces the value of each `image:` line whose value is a key of `digests`, keeping the
/// line's indentation, quoting-free value and trailing comment.
fn rewrite(yaml: &str, digests: &BTreeMap<String, Digest>) -> String {
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.split_inclusive('\n') {
        out.push_str(&rewrite_line(line, digests).unwrap_or_else(|| line.to_string()));
    }
    out
}

fn rewrite_line(line: &str, digests: &BTreeMap<String, Digest>) -> Option<String> {
    let (body, newline) = match line.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (line, ""),
    };
    let key = body.find("image:")?;
    let head = body[..key].trim_start();
    // Only `image:` as a key: at the start of the line or after a list dash.
    if !(head.is_empty() || head == "- ") {
        return None;
    }
    let rest = &body[key + "image:".len()..];
    let (value, comment) = match rest.find(" #") {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let value = value.trim();
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    let digest = digests.get(unquoted)?;
    Some(format!("{}image: {digest}{comment}{newline}", &body[..key]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_lines_are_rewritten_in_place() {
        let d = Digest::of(b"x");
        let digests = BTreeMap::from([("r.io/a/b:1".to_string(), d.clone())]);
        let yaml =
            "a:\n  image: r.io/a/b:1 # pinned\n  - image: \"r.io/a/b:1\"\n  image: other:1\n";
        assert_eq!(
            rewrite(yaml, &digests),
            format!("a:\n  image: {d} # pinned\n  - image: {d}\n  image: other:1\n")
        );
    }
}
