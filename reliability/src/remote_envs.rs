//! Environments whose closures exist only in a binary cache: each is the harness's fetch
//! fixture (busybox, a data path, a tool reading it) under a tag unique to the run, built, signed
//! and copied into one cache directory by real Nix, then deleted from the host store, so that a
//! pod of it makes nixlet fetch it. Between runs [`CacheSet::make_cold`] deletes it again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nixlet_e2e::binary_cache::{
    substituter_toml, unique_tag, BinaryCache, RemoteClosure, SigningKey,
};
use nixlet_e2e::node_config::manifest;
use nixlet_e2e::store_paths::{self, views_of};

use crate::rel_node::RelNode;

/// One environment and its closure.
#[derive(Debug, Clone)]
pub struct RemoteEnv {
    /// `owner/name`, unique to the run.
    pub reference: String,
    pub closure: RemoteClosure,
}

impl RemoteEnv {
    /// `fetched-tool` and `busybox` on PATH.
    pub fn manifest(&self) -> String {
        manifest(
            &[
                ("tool", &self.closure.tool),
                ("busybox", &self.closure.busybox),
            ],
            &[],
        )
    }

    /// The installed views of this environment (`/nix/store/<hash>-nixlet-env-…`).
    pub fn views(&self) -> Vec<String> {
        views_of(&self.reference).into_iter().collect()
    }

    /// Deletes its views and closure from the host store, so its next pod fetches it.
    pub fn make_cold(&self) -> Result<()> {
        store_paths::delete_paths(&self.views())?;
        store_paths::delete_paths(&self.closure.paths())
    }
}

pub struct CacheSet {
    pub dir: PathBuf,
    pub key: SigningKey,
    pub compression: String,
    pub envs: Vec<RemoteEnv>,
}

impl CacheSet {
    /// Builds `count` environments named `<owner>/<name><i>` into one cache below `work`.
    pub fn build(work: &Path, owner: &str, count: usize, compression: &str) -> Result<CacheSet> {
        let cache = BinaryCache::new(&work.join("cache"))?;
        let key = SigningKey::generate(&work.join("keys"), &unique_tag("nixlet-rel"))?;
        let mut envs = Vec::new();
        for i in 0..count {
            let closure = RemoteClosure::build(work, &unique_tag(&format!("rel{i}")))?;
            cache.add(&closure, &key, compression)?;
            closure
                .remove_from_host()
                .with_context(|| format!("removing {} from the host store", closure.tag))?;
            envs.push(RemoteEnv {
                reference: format!("{owner}/env{i}"),
                closure,
            });
        }
        Ok(CacheSet {
            dir: cache.root().to_path_buf(),
            key,
            compression: compression.to_owned(),
            envs,
        })
    }

    pub fn cache(&self) -> Result<BinaryCache> {
        BinaryCache::new(&self.dir)
    }

    /// The `[[substituters]]` entry for this cache served at `url`.
    pub fn substituter(&self, url: &str) -> String {
        substituter_toml(url, &[&self.key.public])
    }

    /// Publishes every environment on `node` and marks their names and tags as the node's.
    pub fn publish(&self, node: &RelNode) -> Result<()> {
        for env in &self.envs {
            node.node.publish(&env.reference, 1, &env.manifest())?;
            node.add_marker(&env.closure.tag);
            node.add_marker(&env.reference.replace('/', "-"));
        }
        Ok(())
    }

    /// Every store path of every closure (outputs; their views are found by name).
    pub fn closure_paths(&self) -> Vec<String> {
        self.envs.iter().flat_map(|e| e.closure.paths()).collect()
    }

    /// What nixlet may have installed for these environments: closures and views.
    pub fn installed_paths(&self) -> Vec<String> {
        let mut paths = self.closure_paths();
        paths.extend(self.envs.iter().flat_map(RemoteEnv::views));
        paths
    }

    /// Deletes the views and closures from the host store (what no pod holds), so the next pod
    /// fetches them again.
    pub fn make_cold(&self) -> Result<()> {
        let views: Vec<String> = self.envs.iter().flat_map(RemoteEnv::views).collect();
        store_paths::delete_paths(&views)?;
        store_paths::delete_paths(&self.closure_paths())
    }

    /// Everything the set put into the host store (outputs, derivations, views), deleted at the
    /// end of a scenario; what is still alive stays and is reported.
    pub fn cleanup(&self) -> Vec<String> {
        let mut left = Vec::new();
        if let Err(e) = self.make_cold() {
            left.push(format!("{e:#}"));
        }
        let derivations: Vec<String> = self
            .envs
            .iter()
            .flat_map(|e| e.closure.derivations.clone())
            .collect();
        if let Err(e) = store_paths::delete_paths(&derivations) {
            left.push(format!("{e:#}"));
        }
        left
    }
}
