//! Which accelerator guests run with. KVM only where the CPU has hardware
//! virtualization (vmx/svm) and /dev/kvm opens; nested paravirtualized KVM
//! (kvm_pvm, no vmx/svm) hangs stock kernels, so such hosts get TCG.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// The operator's choice: `auto` probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    #[default]
    Auto,
    Force(Accel),
}

impl FromStr for AccelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Force(Accel::Kvm)),
            "tcg" => Ok(AccelChoice::Force(Accel::Tcg)),
            other => Err(format!("unknown accelerator '{other}' (auto, kvm or tcg)")),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl AccelChoice {
    pub fn resolve(self) -> (Accel, String) {
        match self {
            AccelChoice::Force(a) => (a, format!("{a} (forced)")),
            AccelChoice::Auto => probe(),
        }
    }
}

/// Returns the accelerator and the reason, for the log.
pub fn probe() -> (Accel, String) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    probe_with(&cpuinfo, kvm_device_opens())
}

fn probe_with(cpuinfo: &str, kvm_opens: bool) -> (Accel, String) {
    if !has_hardware_virt(cpuinfo) {
        return (
            Accel::Tcg,
            "tcg: the CPU shows no vmx/svm (nested or no virtualization)".into(),
        );
    }
    if !kvm_opens {
        return (Accel::Tcg, "tcg: /dev/kvm cannot be opened".into());
    }
    (Accel::Kvm, "kvm: vmx/svm present and /dev/kvm opens".into())
}

fn has_hardware_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

fn kvm_device_opens() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_pvm_without_vmx_gets_tcg() {
        let cpuinfo = "processor: 0\nflags\t\t: fpu vme sse2 hypervisor\n";
        assert_eq!(probe_with(cpuinfo, true).0, Accel::Tcg);
    }

    #[test]
    fn vmx_and_a_working_device_get_kvm() {
        let cpuinfo = "flags\t\t: fpu vmx sse2\n";
        assert_eq!(probe_with(cpuinfo, true).0, Accel::Kvm);
        assert_eq!(probe_with(cpuinfo, false).0, Accel::Tcg);
        assert_eq!(
            probe_with("flags : svm", true).0,
            Accel::Kvm,
            "AMD-V counts too"
        );
    }

    #[test]
    fn choice_parses_with_a_clear_error() {
        assert_eq!("tcg".parse(), Ok(AccelChoice::Force(Accel::Tcg)));
        assert!("fast".parse::<AccelChoice>().unwrap_err().contains("fast"));
    }
}
