//! Flox environments as the tests publish them: a `manifest.toml` (`version = 1`) with
//! store-path installs, priorities, `[vars]`, a hook, a profile and `[containerize.config]`, and
//! the matching `manifest.lock` (`"lockfile-version": 1`, store-path entries) whose `manifest`
//! is the same document, as Flox writes it.

use serde_json::{json, Map, Value};

use crate::node_config::host_system;

#[derive(Debug, Clone, Default)]
pub struct FloxManifest {
    /// (install id, store path, priority)
    installs: Vec<(String, String, Option<u32>)>,
    vars: Vec<(String, String)>,
    hook: Option<String>,
    profile_common: Option<String>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    /// `options.activate.mode`.
    activate_mode: Option<String>,
}

impl FloxManifest {
    pub fn new() -> Self {
        Self::default()
    }

    /// `id.store-path = path` at the default priority (5).
    pub fn install(mut self, id: &str, store_path: &str) -> Self {
        self.installs
            .push((id.to_owned(), store_path.to_owned(), None));
        self
    }

    /// `id = { store-path = path, priority = priority }`: lower wins file collisions.
    pub fn install_at(mut self, id: &str, store_path: &str, priority: u32) -> Self {
        self.installs
            .push((id.to_owned(), store_path.to_owned(), Some(priority)));
        self
    }

    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `[hook] on-activate`.
    pub fn hook(mut self, script: &str) -> Self {
        self.hook = Some(script.to_owned());
        self
    }

    /// `[profile] common`.
    pub fn profile_common(mut self, script: &str) -> Self {
        self.profile_common = Some(script.to_owned());
        self
    }

    /// `[containerize.config] cmd`.
    pub fn cmd(mut self, argv: &[&str]) -> Self {
        self.cmd = Some(argv.iter().map(|s| s.to_string()).collect());
        self
    }

    /// `[containerize.config] working-dir`.
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.to_owned());
        self
    }

    /// `[options] activate.mode`.
    pub fn activate_mode(mut self, mode: &str) -> Self {
        self.activate_mode = Some(mode.to_owned());
        self
    }

    /// The manifest of an environment that includes the FloxHub environments `remotes`, as
    /// `flox include` writes it: `schema-version`, and `[include]` before the rest.
    pub fn toml_including(&self, remotes: &[&str]) -> String {
        let mut out = String::from("schema-version = \"1.14.0\"\n\n[include]\nenvironments = [");
        let items: Vec<String> = remotes
            .iter()
            .map(|remote| format!("{{ remote = {} }}", Value::from(*remote)))
            .collect();
        out.push_str(&items.join(", "));
        out.push_str("]\n");
        out.push_str(self.toml().trim_start_matches("version = 1\n"));
        out
    }

    /// The lock Flox writes for [`FloxManifest::toml_including`]: `manifest` is the merge of
    /// the included environments (in order) and this one, which wins on conflicts; hooks are
    /// concatenated, included first (flox repo, cli/flox-manifest/src/compose/shallow.rs);
    /// `packages` are every install of the merge; `compose` keeps this manifest as `composer`.
    pub fn composed_lock(&self, included: &[(&str, &FloxManifest)]) -> Vec<u8> {
        let mut merged = FloxManifest::default();
        let mut hooks = Vec::new();
        for (_, manifest) in included.iter().map(|(r, m)| (r, *m)).chain([(&"", self)]) {
            for install in &manifest.installs {
                merged.installs.retain(|(id, _, _)| *id != install.0);
                merged.installs.push(install.clone());
            }
            for var in &manifest.vars {
                merged.vars.retain(|(name, _)| *name != var.0);
                merged.vars.push(var.clone());
            }
            hooks.extend(manifest.hook.clone());
            if manifest.activate_mode.is_some() {
                merged.activate_mode = manifest.activate_mode.clone();
            }
        }
        merged.hook = (!hooks.is_empty()).then(|| hooks.join("\n"));
        let mut merged_json = merged.json();
        merged_json
            .as_object_mut()
            .expect("a manifest is an object")
            .remove("version");
        merged_json["schema-version"] = json!("1.14.0");
        let mut composer = self.json();
        let composer_doc = composer.as_object_mut().expect("a manifest is an object");
        composer_doc.remove("version");
        composer_doc.insert("schema-version".into(), json!("1.14.0"));
        let remotes: Vec<Value> = included
            .iter()
            .map(|(remote, _)| json!({ "remote": remote }))
            .collect();
        composer_doc.insert("include".into(), json!({ "environments": remotes }));
        let mut lock: Value = serde_json::from_slice(&merged.lock()).expect("our own lock");
        lock["manifest"] = merged_json;
        lock["compose"] = json!({
            "composer": composer,
            "include": included.iter().map(|(remote, manifest)| json!({
                "name": remote.rsplit('/').next(),
                "descriptor": { "remote": remote },
                "manifest": manifest.json(),
            })).collect::<Vec<_>>(),
            "warnings": [],
        });
        let mut bytes = serde_json::to_vec_pretty(&lock).expect("a json value serialises");
        bytes.push(b'\n');
        bytes
    }

    /// The manifest as TOML (strings written as JSON strings, which are valid TOML strings).
    pub fn toml(&self) -> String {
        let s = |text: &str| Value::from(text).to_string();
        let mut out = String::from("version = 1\n\n[install]\n");
        for (id, path, priority) in &self.installs {
            match priority {
                None => out.push_str(&format!("{id}.store-path = {}\n", s(path))),
                Some(p) => out.push_str(&format!(
                    "{id} = {{ store-path = {}, priority = {p} }}\n",
                    s(path)
                )),
            }
        }
        if !self.vars.is_empty() {
            out.push_str("\n[vars]\n");
            for (name, value) in &self.vars {
                out.push_str(&format!("{name} = {}\n", s(value)));
            }
        }
        if let Some(hook) = &self.hook {
            out.push_str(&format!("\n[hook]\non-activate = {}\n", s(hook)));
        }
        if let Some(common) = &self.profile_common {
            out.push_str(&format!("\n[profile]\ncommon = {}\n", s(common)));
        }
        if let Some(mode) = &self.activate_mode {
            out.push_str(&format!("\n[options]\nactivate.mode = {}\n", s(mode)));
        }
        if self.cmd.is_some() || self.working_dir.is_some() {
            out.push_str("\n[containerize.config]\n");
            if let Some(cmd) = &self.cmd {
                out.push_str(&format!("cmd = {}\n", json!(cmd)));
            }
            if let Some(dir) = &self.working_dir {
                out.push_str(&format!("working-dir = {}\n", s(dir)));
            }
        }
        out
    }

    /// The manifest as the JSON copy a Flox lock keeps of it.
    pub fn json(&self) -> Value {
        let mut install = Map::new();
        for (id, path, priority) in &self.installs {
            let mut descriptor = Map::new();
            descriptor.insert("store-path".into(), json!(path));
            if let Some(p) = priority {
                descriptor.insert("priority".into(), json!(p));
            }
            install.insert(id.clone(), Value::Object(descriptor));
        }
        let mut doc = Map::new();
        doc.insert("version".into(), json!(1));
        doc.insert("install".into(), Value::Object(install));
        if !self.vars.is_empty() {
            let vars: Map<String, Value> = self
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            doc.insert("vars".into(), Value::Object(vars));
        }
        if let Some(hook) = &self.hook {
            doc.insert("hook".into(), json!({ "on-activate": hook }));
        }
        if let Some(common) = &self.profile_common {
            doc.insert("profile".into(), json!({ "common": common }));
        }
        let mut config = Map::new();
        if let Some(cmd) = &self.cmd {
            config.insert("cmd".into(), json!(cmd));
        }
        if let Some(dir) = &self.working_dir {
            config.insert("working-dir".into(), json!(dir));
        }
        if !config.is_empty() {
            doc.insert("containerize".into(), json!({ "config": config }));
        }
        // Flox always writes `options`, empty or not.
        match &self.activate_mode {
            Some(mode) => doc.insert("options".into(), json!({ "activate": { "mode": mode } })),
            None => doc.insert("options".into(), json!({})),
        };
        Value::Object(doc)
    }

    /// A `manifest.lock` for this manifest: a store-path entry per install id for this host's
    /// system and for another one (Flox locks every system the environment supports; a
    /// store-path descriptor names the same path for each), pretty-printed as Flox does.
    pub fn lock(&self) -> Vec<u8> {
        let system = host_system();
        let other = if system.starts_with("x86_64") {
            "aarch64-linux"
        } else {
            "x86_64-linux"
        };
        let mut packages = Vec::new();
        for (id, path, priority) in &self.installs {
            for system in [system.as_str(), other] {
                packages.push(json!({
                    "install_id": id,
                    "store_path": path,
                    "system": system,
                    "priority": priority.unwrap_or(5),
                }));
            }
        }
        let lock = json!({
            "lockfile-version": 1,
            "manifest": self.json(),
            "packages": packages,
        });
        let mut bytes = serde_json::to_vec_pretty(&lock).expect("a json value serialises");
        bytes.push(b'\n');
        bytes
    }
}
