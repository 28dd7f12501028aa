//! Builds the eBPF programs of `tcpviz-ebpf` for the BPF target with the nightly toolchain
//! (aya-build), so that the `tcpviz` binary can embed them. Set `AYA_BUILD_SKIP=1` to skip
//! this (the offline commands do not need the programs; `tcpviz live` then says so).
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo:rustc-check-cfg=cfg(tcpviz_ebpf_skipped)");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    // The eBPF programs are for the live agent, which only Linux has.
    let other_os = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os != "linux");
    let skip = other_os || std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo:rustc-cfg=tcpviz_ebpf_skipped");
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "tcpviz-ebpf")
        .ok_or_else(|| anyhow!("tcpviz-ebpf package not found"))?;
    let root = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // aya-build passes every line the inner cargo prints on as a `cargo:warning`: about 47
    // lines of "Compiling …" in every build, which are not warnings. A quiet inner cargo still
    // prints real warnings and errors.
    // SAFETY: the build script is single-threaded here; nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package { name: ebpf.name.as_str(), root_dir: root.as_str(), ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
