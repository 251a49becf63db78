//! A domain's migration job as libvirt's job stats describe it.

use super::ffi::ParamValue;

/// One sample of `virDomainGetJobStats` (running job) or of the completed job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSample {
    /// Bytes sent so far (memory and, for non-shared storage, disks).
    pub processed_bytes: Option<u64>,
    pub remaining_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// Guest pages dirtied per second.
    pub dirty_rate: Option<u64>,
    /// Pre-copy pass over memory (1 = first).
    pub iteration: Option<u64>,
    /// Running job: expected downtime; completed job: the measured one.
    pub downtime_ms: Option<u64>,
    pub elapsed_ms: Option<u64>,
    /// Disk bytes copied so far and in all (a migration copying non-shared disks).
    pub disk_processed_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
}

impl JobSample {
    pub fn from_params(params: &[(String, ParamValue)]) -> JobSample {
        let get = |field: &str| {
            params
                .iter()
                .find(|(f, _)| f == field)
                .and_then(|(_, v)| v.as_u64())
        };
        JobSample {
            processed_bytes: get("data_processed"),
            remaining_bytes: get("data_remaining"),
            total_bytes: get("data_total"),
            dirty_rate: get("memory_dirty_rate"),
            iteration: get("memory_iteration"),
            downtime_ms: get("downtime"),
            elapsed_ms: get("time_elapsed"),
            disk_processed_bytes: get("disk_processed"),
            disk_total_bytes: get("disk_total"),
        }
    }

    /// Share of the data sent, 0..=1, once libvirt knows the total.
    pub fn progress(&self) -> Option<f64> {
        let total = self.total_bytes.filter(|&t| t > 0)?;
        let done = match (self.processed_bytes, self.remaining_bytes) {
            (_, Some(remaining)) => total.saturating_sub(remaining),
            (Some(processed), None) => processed,
            (None, None) => return None,
        };
        Some((done as f64 / total as f64).clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_comes_from_remaining_over_total() {
        let params = vec![
            ("data_total".to_string(), ParamValue::UInt(1000)),
            ("data_processed".to_string(), ParamValue::UInt(900)),
            ("data_remaining".to_string(), ParamValue::UInt(250)),
            ("memory_iteration".to_string(), ParamValue::UInt(2)),
            ("downtime".to_string(), ParamValue::UInt(30)),
            ("disk_processed".to_string(), ParamValue::UInt(64)),
        ];
        let sample = JobSample::from_params(&params);
        assert_eq!(sample.progress(), Some(0.75));
        assert_eq!(sample.iteration, Some(2));
        assert_eq!(sample.downtime_ms, Some(30));
        assert_eq!(sample.disk_processed_bytes, Some(64));
        assert_eq!(JobSample::default().progress(), None, "no total yet");
    }
}
