//! `/opt/cni/bin/sluice`: the container runtime's entry point.

fn main() {
    std::process::exit(sluice_cni::plugin::main());
}
