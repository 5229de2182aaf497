//! EAL, once per process. `rte_eal_init` cannot run twice in a process (nor
//! again after `rte_eal_cleanup`), so the first [`Eal::init`] wins and
//! later calls get the same outcome; a process that needs other EAL
//! settings must be a new process.
//!
//! EAL pins the thread that initialises it to its main lcore. sluiced's
//! main thread (and every thread it starts later: control, API) must not
//! sit on a worker's core, so the calling thread's CPU set is restored
//! afterwards; workers pin themselves.

use super::{sys, DpdkError};
use std::ffi::CString;
use std::sync::OnceLock;

/// What EAL is started with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EalConfig {
    /// `--no-huge`: anonymous memory, for labs and tests.
    pub no_huge: bool,
    /// `-m`: MiB reserved at start.
    pub memory_mb: u32,
    /// `--file-prefix`.
    pub file_prefix: String,
    /// PCI devices to allow (`-a`); none: `--no-pci`.
    pub pci: Vec<String>,
    /// The core of EAL's main lcore (`-l`); sluiced uses its first worker's.
    pub main_core: usize,
    /// More arguments, as given.
    pub extra: Vec<String>,
}

impl EalConfig {
    /// The argument vector EAL gets (program name first).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "sluiced".to_string(),
            "-l".into(),
            self.main_core.to_string(),
            "--file-prefix".into(),
            self.file_prefix.clone(),
            "-m".into(),
            self.memory_mb.to_string(),
        ];
        if self.no_huge {
            a.push("--no-huge".into());
        }
        if self.pci.is_empty() {
            a.push("--no-pci".into());
        }
        for p in &self.pci {
            a.push("-a".into());
            a.push(p.clone());
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// An initialised EAL (a process-wide token).
#[derive(Debug, Clone, Copy)]
pub struct Eal(());

static EAL: OnceLock<Result<(), DpdkError>> = OnceLock::new();

impl Eal {
    /// Initialises EAL with `cfg`, or returns the outcome of the first call.
    pub fn init(cfg: &EalConfig) -> Result<Eal, DpdkError> {
        EAL.get_or_init(|| init_once(cfg)).clone().map(|()| Eal(()))
    }

    /// Whether EAL is up in this process.
    pub fn is_up() -> bool {
        matches!(EAL.get(), Some(Ok(())))
    }
}

fn init_once(cfg: &EalConfig) -> Result<(), DpdkError> {
    let args = cfg.args();
    let joined = args[1..].join(" ");
    let mut cstrs = Vec::with_capacity(args.len());
    for a in &args {
        cstrs.push(CString::new(a.as_str()).map_err(|_| DpdkError::Eal {
            args: joined.clone(),
            reason: format!("argument `{a}` holds a NUL byte"),
        })?);
    }
    // EAL keeps pointers into argv for the process's life: leak them.
    let argv: &'static mut [*mut std::os::raw::c_char] = Box::leak(
        cstrs
            .into_iter()
            .map(CString::into_raw)
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most its size.
    let mut before: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, for the calling thread (pid 0).
    let saved =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut before) }
            == 0;
    // SAFETY: argv holds argc valid NUL-terminated strings that live for
    // the rest of the process; EAL is initialised at most once (OnceLock).
    let rc = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
    if saved {
        // SAFETY: restores the set read above on the same thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &before) };
    }
    if rc < 0 {
        return Err(DpdkError::Eal {
            args: joined,
            reason: super::last_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_follow_the_settings() {
        let c = EalConfig {
            no_huge: true,
            memory_mb: 256,
            file_prefix: "lab1".into(),
            pci: vec![],
            main_core: 1,
            extra: vec!["--log-level=lib.eal:debug".into()],
        };
        assert_eq!(
            c.args().join(" "),
            "sluiced -l 1 --file-prefix lab1 -m 256 --no-huge --no-pci --log-level=lib.eal:debug"
        );
        let c = EalConfig {
            pci: vec!["0000:3b:02.1".into()],
            memory_mb: 1024,
            file_prefix: "sluice".into(),
            ..EalConfig::default()
        };
        assert_eq!(
            c.args().join(" "),
            "sluiced -l 0 --file-prefix sluice -m 1024 -a 0000:3b:02.1"
        );
    }
}
