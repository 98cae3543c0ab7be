//! Build identity for `--version` and the start-up line: the git commit the binary was built
//! from, `-dirty` when the work tree had uncommitted changes; or `ELB_WS_PROXY_REVISION`
//! (the Dockerfile's `REVISION` build argument) where there is no checkout.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ELB_WS_PROXY_REVISION");
    for path in [".git/HEAD", ".git/index", ".git/refs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let revision = std::env::var("ELB_WS_PROXY_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(from_git)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ELB_WS_PROXY_REVISION={revision}");
}

/// `abcdef012345`, or `abcdef012345-dirty`; `None` outside a checkout or without git.
fn from_git() -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])?;
    Some(if dirty.is_empty() {
        commit
    } else {
        format!("{commit}-dirty")
    })
}
