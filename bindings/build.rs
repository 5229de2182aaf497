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
        "dpdk_shim.c",
        "dpdk_shim.h",
        "dpdk_wrapper.h",
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
        .allowlist_type("sluice_xsk_ring_maps")
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

    dpdk(&c, &out);
}

/// DPDK 22.11 from Debian's libdpdk-dev (pkg-config `libdpdk`), linked
/// dynamically: the C shim for its inline fast-path functions, and the
/// bindings to EAL, ethdev (with rte_flow), mbufs and mempools. Drivers are
/// not linked: EAL loads them from its plugin directory at start.
fn dpdk(c: &std::path::Path, out: &std::path::Path) {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let cflags = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|| {
            panic!(
                "pkg-config finds no libdpdk: install Debian's libdpdk-dev (scripts/setup.sh does)"
            )
        });
    let flags: Vec<String> = cflags.split_whitespace().map(str::to_string).collect();
    // `-include rte_config.h` is two words; keep pairs together.
    let mut build = cc::Build::new();
    build
        .file(c.join("dpdk_shim.c"))
        .include(c)
        .opt_level(3)
        .warnings(true);
    for f in &flags {
        build.flag(f);
    }
    build.compile("sluice_dpdk_shim");
    for lib in [
        "rte_ethdev",
        "rte_mbuf",
        "rte_mempool",
        "rte_ring",
        "rte_eal",
        "rte_kvargs",
    ] {
        println!("cargo:rustc-link-lib={lib}");
    }
    let bindings = bindgen::Builder::default()
        .header(c.join("dpdk_wrapper.h").display().to_string())
        .clang_arg(format!("-I{}", c.display()))
        .clang_args(flags.iter().filter(|f| !f.starts_with("-march")))
        .allowlist_function("rte_eal_init")
        .allowlist_function("rte_eal_cleanup")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_thread_register")
        .allowlist_function("rte_thread_unregister")
        .allowlist_function("rte_dev_probe")
        .allowlist_function("rte_dev_remove")
        .allowlist_function("rte_eal_hotplug_remove")
        .allowlist_function("rte_eth_.*")
        .allowlist_function("rte_flow_validate")
        .allowlist_function("rte_flow_create")
        .allowlist_function("rte_flow_destroy")
        .allowlist_function("rte_flow_flush")
        .allowlist_function("rte_flow_isolate")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_pktmbuf_free_bulk")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("rte_mempool_lookup")
        .allowlist_function("rte_socket_count")
        .allowlist_function("sluice_dpdk_.*")
        .allowlist_type("rte_mbuf")
        .allowlist_type("rte_eth_.*")
        .allowlist_type("rte_flow_(attr|item|action|error|item_type|action_type|item_eth|item_ipv4|item_udp|item_vxlan|action_queue|action_rss)")
        .allowlist_type("rte_(ether|ipv4|udp|vxlan)_hdr")
        .opaque_type("rte_l2tpv2_.*")
        .opaque_type("rte_gtp_.*")
        .allowlist_var("RTE_ETH_.*")
        .allowlist_var("RTE_MBUF_.*")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("SOCKET_ID_ANY")
        .blocklist_function("rte_eth_.*_burst")
        .blocklist_function("rte_eth_.*_prepare")
        .derive_default(true)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(true)
        .generate()
        .expect("bindgen could not read DPDK's headers: install libdpdk-dev and libclang-dev (scripts/setup.sh does)");
    bindings
        .write_to_file(out.join("dpdk_bindings.rs"))
        .expect("DPDK bindings written");
}
