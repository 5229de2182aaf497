//! Builds sluice's XDP program (clang -target bpf), the C shim for libxdp's
//! inline ring functions, and the Rust bindings (bindgen) to libxdp and
//! libbpf. Needs Debian's clang, libclang-dev, libxdp-dev and libbpf-dev:
//! `scripts/setup.sh` installs them.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let c = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("c");
    for f in [
        "sluice_xdp.bpf.c",
        "sluice_xdp.h",
        "xsk_shim.c",
        "xsk_shim.h",
        "wrapper.h",
    ] {
        println!("cargo:rerun-if-changed=c/{f}");
    }

    // The XDP program, embedded into the library as bytes.
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    let status = Command::new(env::var("CLANG").unwrap_or_else(|_| "clang".into()))
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .arg(format!("-I{}", c.display()))
        .arg("-c")
        .arg(c.join("sluice_xdp.bpf.c"))
        .arg("-o")
        .arg(out.join("sluice_xdp.bpf.o"))
        .status()
        .unwrap_or_else(|e| {
            panic!("clang could not run ({e}): install Debian's clang (scripts/setup.sh does)")
        });
    assert!(status.success(), "clang failed to build the XDP program");

    cc::Build::new()
        .file(c.join("xsk_shim.c"))
        .include(&c)
        .opt_level(2)
        .warnings(true)
        .compile("sluice_xsk_shim");
    println!("cargo:rustc-link-lib=xdp");
    println!("cargo:rustc-link-lib=bpf");

    let bindings = bindgen::Builder::default()
        .header(c.join("wrapper.h").display().to_string())
        .clang_arg(format!("-I{}", c.display()))
        .allowlist_function("xsk_.*")
        .allowlist_function("xdp_program__.*")
        .allowlist_function("xdp_multiprog__.*")
        .allowlist_function("libxdp_.*")
        .allowlist_function("bpf_object__.*")
        .allowlist_function("bpf_map__fd")
        .allowlist_function("bpf_map_update_elem")
        .allowlist_function("bpf_map_delete_elem")
        .allowlist_function("bpf_xdp_query_id")
        .allowlist_function("sluice_.*")
        .allowlist_type("xdp_desc")
        .allowlist_type("xdp_options")
        .allowlist_type("xdp_statistics")
        .allowlist_type("xsk_.*")
        .allowlist_type("sluice_xdp_config")
        .allowlist_var("XDP_.*")
        .allowlist_var("XSK_.*")
        .allowlist_var("SLUICE_.*")
        .allowlist_var("XDP_FLAGS_.*")
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen could not read the libxdp/libbpf headers: install libxdp-dev, libbpf-dev and libclang-dev (scripts/setup.sh does)");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("bindings written");
}
