//! `sluice-agent`: see the library's docs.

fn main() -> std::process::ExitCode {
    sluice_control::cli::main()
}
