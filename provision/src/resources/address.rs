//! A resource's address: its kind and its key in the stack, written `kind.key` (`bucket.data`,
//! `compute.spot`, `role.job`) wherever the tool prints, records or reads one. The text is the
//! contract (plans, saved plans and the state table hold it), so the type reads and writes
//! exactly that text.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Kind;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub kind: Kind,
    /// The key after the kind (`spot` in `compute.spot`).
    pub key: String,
}

impl Address {
    pub fn new(kind: Kind, key: impl Into<String>) -> Address {
        Address {
            kind,
            key: key.into(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind.as_str(), self.key)
    }
}

/// Ordered as the text is: listings, the state and removals keep the order they had when
/// addresses were strings. Comparing the kind's text, then the key, is the text's order: a
/// kind's text is lower-case letters and `_`, all of which sort after the `.` that follows it.
impl Ord for Address {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.kind.as_str(), self.key.as_str()).cmp(&(other.kind.as_str(), other.key.as_str()))
    }
}

impl PartialOrd for Address {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Text that is no resource address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a resource address: give KIND.KEY as the plan prints it (e.g. bucket.data, queue.main), KIND one of {kinds}")]
pub struct BadAddress {
    given: String,
    kinds: String,
}

impl FromStr for Address {
    type Err = BadAddress;

    fn from_str(text: &str) -> Result<Address, BadAddress> {
        text.split_once('.')
            .and_then(|(kind, key)| {
                let kind = Kind::ALL.into_iter().find(|k| k.as_str() == kind)?;
                (!key.is_empty()).then(|| Address::new(kind, key))
            })
            .ok_or_else(|| BadAddress {
                given: text.to_string(),
                kinds: Kind::ALL.map(Kind::as_str).join(", "),
            })
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_plan_text() {
        for text in [
            "bucket.data",
            "compute.spot",
            "role.batch-service",
            "queue.main",
            "job_definition.train",
            "instance_profile.instance",
            "vpc_endpoint.s3",
        ] {
            let address: Address = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
            let json = serde_json::to_string(&address).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Address>(&json).unwrap(), address);
        }
        let spot: Address = "compute.spot".parse().unwrap();
        assert_eq!(spot, Address::new(Kind::ComputeEnvironment, "spot"));
    }

    #[test]
    fn refuses_what_is_no_address() {
        for text in ["bucket", "bucket.", "compute_environment.spot", ".data", ""] {
            let err = text.parse::<Address>().unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{text}` is not a resource address")),
                "{err}"
            );
            assert!(err.contains("bucket, repository"), "{err}");
        }
    }

    #[test]
    fn orders_as_the_text() {
        let mut texts = vec![
            "role.job",
            "repository.runtime",
            "compute.spot",
            "compute.on-demand",
            "queue.main",
            "bucket.data",
            "job_definition.train",
            "instance_profile.instance",
            "log_group.jobs",
            "role.batch-service",
        ];
        let mut addresses: Vec<Address> = texts.iter().map(|t| t.parse().unwrap()).collect();
        texts.sort();
        addresses.sort();
        let sorted: Vec<String> = addresses.iter().map(Address::to_string).collect();
        assert_eq!(sorted, texts);
    }
}
