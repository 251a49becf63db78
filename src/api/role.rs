//! What a peer may do on this host, as the control API and access.json name it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// See this host's announcements and services; nothing else.
    Observe,
    /// Also open streams to the services this host provides.
    Consume,
    /// Also migrate VMs into this host.
    Control,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "observe" => Ok(Role::Observe),
            "consume" => Ok(Role::Consume),
            "control" => Ok(Role::Control),
            other => Err(format!(
                "unknown role '{other}' (observe, consume or control)"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Observe => "observe",
            Role::Consume => "consume",
            Role::Control => "control",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_with_a_clear_error() {
        assert_eq!("control".parse::<Role>(), Ok(Role::Control));
        assert!("admin".parse::<Role>().unwrap_err().contains("admin"));
    }
}
