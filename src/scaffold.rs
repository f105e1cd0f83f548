//! `hookbus hooks new NAME --lang L`: writes a working hook project.
//!
//! Templates live in `src/templates/<lang>/` and are compiled into the binary.
//! Every template builds a hook that behaves the same way (it drops messages whose
//! JSON contains the configured `block` text), has a `build.sh` that installs what it
//! needs, and a `hooks.yaml` with its entry, so one test covers them all.
//! `{{name}}` in a template becomes the hook's name and `{{ident}}` the name with `-`
//! replaced by `_`. Component languages also get the contract as `wit/hook.wit`.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust component (cargo, wit-bindgen)
    Rust,
    /// C component (clang + wasi-libc, wit-bindgen C bindings, wasm-tools)
    C,
    /// Python component (componentize-py)
    Python,
    /// JavaScript component (jco, QuickJS backend)
    Js,
    /// AssemblyScript core module (asc, the core-module ABI)
    Assemblyscript,
}

/// (path in the project, contents)
type File = (&'static str, &'static str);

macro_rules! template {
    ($lang:literal: $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("templates/", $lang, "/", $path)))),*]
    };
}

const WIT: File = ("wit/hook.wit", include_str!("../wit/hook.wit"));

fn files(lang: Lang) -> Vec<File> {
    let (files, component): (&[File], bool) = match lang {
        Lang::Rust => (
            template!("rust": "Cargo.toml", "src/lib.rs", "build.sh", "hooks.yaml", "README.md", ".gitignore"),
            true,
        ),
        Lang::C => (
            &[
                ("hook.c", include_str!("templates/c/hook.c")),
                (
                    "component_type.c",
                    include_str!("templates/c/component_type.c"),
                ),
                ("build.sh", include_str!("templates/c/build.sh")),
                ("hooks.yaml", include_str!("templates/c/hooks.yaml")),
                ("README.md", include_str!("templates/c/README.md")),
                (".gitignore", include_str!("templates/c/.gitignore")),
                ("bindings/hook.c", include_str!("../wit/bindings/c/hook.c")),
                ("bindings/hook.h", include_str!("../wit/bindings/c/hook.h")),
            ],
            true,
        ),
        Lang::Python => (
            template!("python": "app.py", "build.sh", "hooks.yaml", "README.md", ".gitignore"),
            true,
        ),
        Lang::Js => (
            template!("js": "app.js", "package.json", "build.sh", "hooks.yaml", "README.md", ".gitignore"),
            true,
        ),
        Lang::Assemblyscript => (
            &[
                ("hook.ts", include_str!("templates/assemblyscript/hook.ts")),
                // The guard hook's small JSON reader, for reading the config.
                ("json.ts", include_str!("../hooks/guard/json.ts")),
                (
                    "package.json",
                    include_str!("templates/assemblyscript/package.json"),
                ),
                (
                    "build.sh",
                    include_str!("templates/assemblyscript/build.sh"),
                ),
                (
                    "hooks.yaml",
                    include_str!("templates/assemblyscript/hooks.yaml"),
                ),
                (
                    "README.md",
                    include_str!("templates/assemblyscript/README.md"),
                ),
                (
                    ".gitignore",
                    include_str!("templates/assemblyscript/.gitignore"),
                ),
            ],
            false,
        ),
    };
    let mut files = files.to_vec();
    if component {
        files.push(WIT);
    }
    files
}

/// Checks that `name` works as a hook name, a crate name and a file name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64;
    if !valid {
        bail!(
            "invalid hook name {name:?}: use lower-case letters, digits and '-', starting with a letter (e.g. my-hook)"
        );
    }
    Ok(())
}

/// Writes the project for hook `name` in `dir` (default `./NAME`); returns the folder.
pub fn create(name: &str, lang: Lang, dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    match fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty; choose another name or --dir",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot use {}", dir.display())),
    }
    let ident = name.replace('-', "_");
    for (path, text) in files(lang) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = text.replace("{{name}}", name).replace("{{ident}}", &ident);
        fs::write(&target, text).with_context(|| format!("cannot write {}", target.display()))?;
        if path.ends_with(".sh") {
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(dir)
}

/// What to do next, printed after `create`.
pub fn next_steps(name: &str, dir: &Path) -> String {
    format!(
        "created hook {name} in {dir}\n\nnext:\n  cd {dir}\n  ./build.sh                     # builds {name}.wasm (installs its toolchain on first use)\n  echo '{{\"type\":\"message\",\"to\":\"a\",\"body\":\"forbidden\"}}' | hookbus hooks test {name} --config hooks.yaml\n\nthen edit the source, rebuild, and add the entry of hooks.yaml to your hooks config.",
        dir = dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "my-hook", "redact2"] {
            check_name(good).unwrap();
        }
        for bad in ["", "My", "1x", "a_b", "a-", "a b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_template_substitutes_and_has_the_common_files() {
        for lang in Lang::value_variants() {
            let dir = tempfile::tempdir().unwrap();
            let project = create("my-hook", *lang, Some(dir.path().join("p"))).unwrap();
            for common in ["build.sh", "hooks.yaml", "README.md"] {
                let text = fs::read_to_string(project.join(common)).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{lang:?} {common} keeps a placeholder"
                );
            }
            let yaml = fs::read_to_string(project.join("hooks.yaml")).unwrap();
            assert!(yaml.contains("name: my-hook"), "{lang:?}: {yaml}");
            let mode = fs::metadata(project.join("build.sh"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111, "{lang:?} build.sh not executable");
            // A second run refuses to overwrite.
            assert!(create("my-hook", *lang, Some(project.clone())).is_err());
        }
    }
}
