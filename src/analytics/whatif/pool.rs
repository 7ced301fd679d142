//! The pool a what-if runs on instead of the recorded one: a JSON or TOML file listing VMs with
//! their capacity and labels.
//!
//! ```json
//! {"vms": [{"vm_id": "vm-1", "capacity": 8, "labels": {"region": "eu-west"}},
//!          {"vm_id": "vm-2", "capacity": 4}]}
//! ```
//!
//! ```toml
//! [[vms]]
//! vm_id = "vm-1"
//! capacity = 8
//! labels = { region = "eu-west" }
//! ```

use orchestrator_events::{Labels, VmId};
use serde::{Deserialize, Serialize};

use crate::domain::command::RegisterVm;

/// A VM of the pool file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolVm {
    /// Its id.
    pub vm_id: VmId,
    /// Sessions it holds (active + paused).
    pub capacity: u32,
    /// Its labels; none when absent.
    #[serde(default)]
    pub labels: Labels,
}

/// A pool file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// The VMs, registered in this order when the replay starts.
    pub vms: Vec<PoolVm>,
}

impl Pool {
    /// Parses a pool: JSON when the text starts with `{`, else TOML.
    pub fn parse(text: &str) -> Result<Pool, String> {
        let pool: Pool = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("pool (JSON): {e}"))?
        } else {
            toml::from_str(text).map_err(|e| format!("pool (TOML): {e}"))?
        };
        if pool.vms.is_empty() {
            return Err("the pool lists no VM".into());
        }
        Ok(pool)
    }

    /// The commands that register the pool.
    pub fn commands(&self) -> impl Iterator<Item = RegisterVm> + '_ {
        self.vms.iter().map(|vm| RegisterVm {
            vm_id: vm.vm_id.clone(),
            capacity: vm.capacity,
            labels: vm.labels.clone(),
            heartbeat_ms: None,
            endpoint: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_parse_from_json_and_toml() {
        let json = Pool::parse(
            r#"{"vms": [{"vm_id": "vm-1", "capacity": 8, "labels": {"region": "eu"}}, {"vm_id": "vm-2", "capacity": 4}]}"#,
        )
        .unwrap();
        let toml = Pool::parse(
            "[[vms]]\nvm_id = \"vm-1\"\ncapacity = 8\nlabels = { region = \"eu\" }\n\n\
             [[vms]]\nvm_id = \"vm-2\"\ncapacity = 4\n",
        )
        .unwrap();
        assert_eq!(json, toml);
        assert_eq!(json.vms[0].labels.len(), 1);
        assert!(Pool::parse(r#"{"vms": []}"#).is_err());
        assert!(Pool::parse(r#"{"vms": [{"vm_id": "a b", "capacity": 1}]}"#).is_err());
        assert!(Pool::parse("[[vms]]\nvm_id = \"x\"\ncapacity = 1\nsize = 3\n").is_err());
    }
}
