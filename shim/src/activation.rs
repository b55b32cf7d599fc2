//! Activation: running the environment's `[hook] on-activate` and `[profile]` scripts before the
//! container's command, as `flox activate -- CMD` does, under the closure's own bash.
//!
//! The scripts live in the environment view (`activate`, `activate.d/*.bash`); the process's
//! argv becomes `bash --noprofile --norc <view>/activate ARGV...`, so the original arguments
//! reach `exec "$@"` untouched whatever they contain (spaces, quotes, empty strings). The script
//! uses nothing but bash itself: the environment may have no coreutils at all.

use nixlet_manifest::ResolvedEnv;

/// The script the container's process runs first, at the root of the view.
pub const ACTIVATE_SCRIPT: &str = "activate";

/// What the empty image nixlet ships runs when a pod gives no command: a name no real program
/// has, which the shim replaces with the environment's `[containerize.config] cmd`. containerd's
/// CRI plugin refuses a container with neither command nor image command before any shim sees it.
pub const DEFAULT_COMMAND_SENTINEL: &str = "/.nixlet/default-command";

/// One file of the view that activation needs: path relative to the view, contents, executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationFile {
    pub relative_path: String,
    pub contents: String,
    pub executable: bool,
}

/// The files activation needs in the view, or none when the environment has no hook or profile.
pub fn activation_files(env: &ResolvedEnv) -> Vec<ActivationFile> {
    if !env.needs_activation() {
        return Vec::new();
    }
    let name = env.display_name();
    let mut files = Vec::new();
    let mut steps = String::new();
    let scripts = [
        (
            "hook-on-activate",
            "on-activate hook",
            env.hook_on_activate.as_deref(),
        ),
        (
            "profile-common",
            "[profile] common",
            env.profile.common.as_deref(),
        ),
        (
            "profile-bash",
            "[profile] bash",
            env.profile.bash.as_deref(),
        ),
    ];
    for (file, what, script) in scripts {
        let Some(script) = script.filter(|text| !text.trim().is_empty()) else {
            continue;
        };
        files.push(ActivationFile {
            relative_path: format!("activate.d/{file}.bash"),
            contents: script.to_string(),
            executable: false,
        });
        steps.push_str(&format!(
            "source \"$__nixlet_dir/activate.d/{file}.bash\"\n\
             __nixlet_status=$?\n\
             if [ \"$__nixlet_status\" -ne 0 ]; then\n  \
               echo \"nixlet: {name}: {what} failed with exit status $__nixlet_status\" >&2\n  \
               exit \"$__nixlet_status\"\n\
             fi\n"
        ));
    }
    let activate = format!(
        "# nixlet activation for {name}: the environment's hook and profile, then the command.\n\
         # Run as: bash --noprofile --norc <view>/{ACTIVATE_SCRIPT} COMMAND [ARGS...]\n\
         __nixlet_dir=\"${{BASH_SOURCE[0]%/*}}\"\n\
         if [ \"$#\" -eq 0 ]; then\n  \
           echo \"nixlet: {name}: no command to run\" >&2\n  \
           exit 127\n\
         fi\n\
         {steps}\
         unset __nixlet_dir __nixlet_status\n\
         exec \"$@\"\n"
    );
    files.push(ActivationFile {
        relative_path: ACTIVATE_SCRIPT.to_string(),
        contents: activate,
        executable: true,
    });
    files
}

/// The argv that runs `args` through the view's activation script under `bash`.
pub fn wrap_argv(bash: &str, view: &str, args: &[String]) -> Vec<String> {
    let mut argv = vec![
        bash.to_string(),
        "--noprofile".to_string(),
        "--norc".to_string(),
        format!("{view}/{ACTIVATE_SCRIPT}"),
    ];
    argv.extend(args.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use nixlet_manifest::{ContainerizeConfig, EnvRef, Profile};
    use std::process::Command;

    fn env(hook: Option<&str>, common: Option<&str>) -> ResolvedEnv {
        ResolvedEnv {
            reference: EnvRef::parse("acme/web").unwrap(),
            generation: 3,
            packages: vec![],
            vars: vec![],
            hook_on_activate: hook.map(str::to_string),
            profile: Profile {
                common: common.map(str::to_string),
                ..Profile::default()
            },
            containerize: ContainerizeConfig::default(),
            activate_mode: None,
            included: vec![],
            warnings: vec![],
            manifest_lock: None,
            lock_digest: None,
        }
    }

    /// Writes the files into a directory standing in for the view and runs the script with the
    /// host's bash, as the container would with the closure's.
    fn run(env: &ResolvedEnv, args: &[&str]) -> std::process::Output {
        let view = tempfile::tempdir().unwrap();
        for file in activation_files(env) {
            let path = view.path().join(&file.relative_path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file.contents).unwrap();
        }
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let argv = wrap_argv("/bin/bash", &view.path().display().to_string(), &args);
        Command::new(&argv[0]).args(&argv[1..]).output().unwrap()
    }

    #[test]
    fn no_hook_and_no_profile_means_no_activation() {
        assert!(activation_files(&env(None, Some("  \n"))).is_empty());
    }

    #[test]
    fn hook_exports_reach_the_command_and_arguments_arrive_intact() {
        let env = env(
            Some("export FROM_HOOK=\"hooked\""),
            Some("export FROM_PROFILE=profiled"),
        );
        let output = run(
            &env,
            &[
                "/bin/sh",
                "-c",
                "printf '%s|' \"$FROM_HOOK\" \"$FROM_PROFILE\" \"$@\"",
                "sh",
                "a b",
                "",
                "'\"$x",
            ],
        );
        assert_eq!(String::from_utf8_lossy(&output.stderr), "");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "hooked|profiled|a b||'\"$x|"
        );
    }

    #[test]
    fn a_failing_hook_fails_with_its_status_and_says_so() {
        let env = env(Some("echo preparing >&2\nfalse"), None);
        let output = run(&env, &["/bin/echo", "never"]);
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "preparing\nnixlet: acme/web:3: on-activate hook failed with exit status 1\n"
        );
    }

    #[test]
    fn argv_keeps_every_argument_as_it_was() {
        let args = vec![
            "printf".to_string(),
            "%s|".into(),
            "a b".into(),
            "".into(),
            "'\"$x".into(),
        ];
        assert_eq!(
            wrap_argv("/nix/store/b-bash/bin/bash", "/nix/store/v-view", &args),
            vec![
                "/nix/store/b-bash/bin/bash",
                "--noprofile",
                "--norc",
                "/nix/store/v-view/activate",
                "printf",
                "%s|",
                "a b",
                "",
                "'\"$x"
            ]
        );
    }
}
