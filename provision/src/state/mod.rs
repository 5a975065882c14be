//! State in DynamoDB (docs/design.md, "State"): one item per resource, a `meta` item with the
//! serial, and a `lock` item taken with a conditional write. Partition `{stack}/{env}`, so one
//! table serves every stack and environment.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, KeySchemaElement, KeyType, Put,
    ScalarAttributeType, TableStatus, TransactWriteItem, Update,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::resources::{Address, Attrs, Handle, Kind, SdkContext};

pub mod lock;

pub use lock::{Lock, LockError, LockInfo, LockSeen};

const RESOURCE_PREFIX: &str = "resource#";

/// What was applied for one address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub address: Address,
    pub handle: Handle,
    /// The attributes as applied (desired, every reference resolved).
    pub attributes: Attrs,
    /// SHA-256 of `attributes` (canonical JSON).
    pub hash: String,
    /// Addresses this resource depends on: a removed resource is deleted after its dependents.
    pub deps: Vec<Address>,
    /// Replacement counter of a compute environment (`-r{N}` suffix); `None` for the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<u32>,
    /// Replaced resources not deleted yet (a crash between create and delete): the next apply
    /// deletes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deposed: Vec<Handle>,
    pub updated: String,
}

pub fn hash_attrs(attrs: &Attrs) -> String {
    // BTreeMap keys are ordered, and serde_json keeps object order: the text is canonical.
    hex::encode(Sha256::digest(
        serde_json::to_vec(attrs).unwrap_or_default(),
    ))
}

/// The stack's recorded state.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bumped by every apply or destroy that changed something; survives destroy.
    pub serial: u64,
    /// GPU mode of the last apply.
    pub gpu: Option<bool>,
    pub records: BTreeMap<Address, Record>,
    /// Whether the table exists at all (plan before the first apply: it does not).
    pub table_exists: bool,
    /// The lock item as this read saw it (absent: none), for [`Lock::saw_unchanged`].
    pub lock: Option<LockSeen>,
}

/// What an apply or destroy writes at its end, in one request with the lock's release
/// ([`Lock::release_with`]).
#[derive(Debug, Default)]
pub struct Finish {
    /// Bump the serial, recording this GPU mode (see [`Store::bump_serial`]).
    pub bump: Option<Option<bool>>,
    /// Records not written yet: those of the last actions, which nothing waited for.
    pub puts: Vec<Record>,
    /// Entries to forget: resources deleted, or found gone.
    pub removes: Vec<Address>,
}

impl Finish {
    fn is_empty(&self) -> bool {
        self.bump.is_none() && self.puts.is_empty() && self.removes.is_empty()
    }

    fn writes(&self) -> Vec<Write> {
        let put: BTreeMap<&Address, &Record> = self.puts.iter().map(|r| (&r.address, r)).collect();
        // One action per item in a transaction: the last record of an address wins, and an
        // address both written and forgotten is written.
        let mut removes: Vec<&Address> = self
            .removes
            .iter()
            .filter(|a| !put.contains_key(a))
            .collect();
        removes.sort();
        removes.dedup();
        put.into_values()
            .map(|r| Write::Put(Box::new(r.clone())))
            .chain(removes.into_iter().map(|a| Write::Delete(a.clone())))
            .collect()
    }
}

/// One state entry written or forgotten.
#[derive(Debug, Clone)]
pub enum Write {
    Put(Box<Record>),
    Delete(Address),
}

/// The state table, seen from one stack and environment.
#[derive(Clone, Debug)]
pub struct Store {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
    pub pk: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, key: &str) -> Option<&'a str> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How long a new state table may take to become ACTIVE (AWS: seconds).
pub const TABLE_ACTIVE_WITHIN: Duration = Duration::from_secs(300);

impl Store {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Self {
        Self {
            client,
            table: table.to_string(),
            pk: pk.to_string(),
        }
    }

    pub async fn table_exists(&self) -> Result<bool> {
        Ok(self.table_status().await?.is_some())
    }

    /// The table's status (absent: there is no table).
    pub async fn table_status(&self) -> Result<Option<TableStatus>> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.table()
                    .and_then(|t| t.table_status())
                    .cloned()
                    .unwrap_or(TableStatus::Creating),
            )),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).ctx(format!("reading state table {}", self.table)),
        }
    }

    /// Creates the table when missing (first apply), and waits until it is ACTIVE; `status` is
    /// what [`Store::table_status`] answered (read beside the credentials check: an existing
    /// table costs no further call). Two first applies at once both get here: the loser of the
    /// create waits like the winner.
    pub async fn ensure_table(&self, status: Option<TableStatus>) -> Result<()> {
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if status.is_none() {
            self.create_table().await?;
        }
        // The SDK's waiter: DescribeTable until ACTIVE (at once when it already is).
        self.client
            .wait_until_table_exists()
            .table_name(&self.table)
            .wait(TABLE_ACTIVE_WITHIN)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "state table {} did not become ACTIVE: {}",
                    self.table,
                    aws_smithy_types::error::display::DisplayErrorContext(e)
                )
            })?;
        Ok(())
    }

    /// Creates the table; one that another first apply created meanwhile is fine. It is not
    /// ACTIVE yet: DynamoDB answers its item reads and writes ResourceNotFoundException until
    /// it is.
    pub async fn create_table(&self) -> Result<()> {
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("sk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("sk")
                    .key_type(KeyType::Range)
                    .build()?,
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) => {}
            Err(e) => return Err(e).ctx(format!("creating state table {}", self.table)),
        }
        Ok(())
    }

    /// Reads every item of this stack and environment (no table: empty state).
    pub async fn load(&self) -> Result<Snapshot> {
        let mut snapshot = Snapshot {
            table_exists: true,
            ..Default::default()
        };
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            // No DescribeTable first: a missing table answers the query itself, one round
            // trip less on every plan.
            let out = match self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&self.pk))
                // Only what the snapshot keeps: the rest of an item is for people reading the
                // table, and leaving it out roughly halves the answer. A record names its own
                // address, so not even the sort key: the meta item is the one with a serial.
                // And the lock's version, to tell whether this read is what a read under
                // the lock would have answered (see `Lock::saw_unchanged`).
                .projection_expression("#record, #serial, #gpu, #token, #expires, #released")
                .expression_attribute_names("#record", "record")
                .expression_attribute_names("#serial", "serial")
                .expression_attribute_names("#gpu", "gpu")
                .expression_attribute_names("#token", "token")
                .expression_attribute_names("#expires", "expires")
                .expression_attribute_names("#released", "released")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    return Ok(Snapshot::default())
                }
                Err(e) => return Err(e).ctx(format!("reading state of {}", self.pk)),
            };
            for item in out.items() {
                if let Some(lock) = LockSeen::of(item) {
                    snapshot.lock = Some(lock);
                } else if let Some(serial) = item.get("serial") {
                    snapshot.serial = serial.as_n().ok().and_then(|n| n.parse().ok()).unwrap_or(0);
                    snapshot.gpu = item.get("gpu").and_then(|v| v.as_bool().ok()).copied();
                } else if let Some(json) = get_s(item, "record") {
                    let record: Record = serde_json::from_str(json).with_context(|| {
                        format!(
                            "a state item of {} is not readable: {}",
                            self.pk,
                            json.chars().take(80).collect::<String>()
                        )
                    })?;
                    snapshot.records.insert(record.address.clone(), record);
                }
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        Ok(snapshot)
    }

    /// A record's item: the JSON record, and its handle and hash for people reading the table.
    fn record_item(&self, record: &Record) -> Result<HashMap<String, AttributeValue>> {
        Ok(HashMap::from([
            ("pk".to_string(), s(&self.pk)),
            (
                "sk".to_string(),
                s(format!("{RESOURCE_PREFIX}{}", record.address)),
            ),
            ("kind".to_string(), s(record.handle.kind.as_str())),
            ("name".to_string(), s(&record.handle.name)),
            ("id".to_string(), s(&record.handle.id)),
            ("hash".to_string(), s(&record.hash)),
            ("updated".to_string(), s(&record.updated)),
            ("record".to_string(), s(serde_json::to_string(record)?)),
        ]))
    }

    pub async fn put(&self, record: &Record) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.record_item(record)?))
            .send()
            .await
            .ctx(format!("recording {} in the state", record.address))?;
        Ok(())
    }

    /// `write` as one action of a transaction.
    fn transact_item(&self, write: &Write) -> Result<TransactWriteItem> {
        Ok(match write {
            Write::Put(record) => TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(self.record_item(record)?))
                        .build()?,
                )
                .build(),
            Write::Delete(address) => TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&self.table)
                        .key("pk", s(&self.pk))
                        .key("sk", s(format!("{RESOURCE_PREFIX}{address}")))
                        .build()?,
                )
                .build(),
        })
    }

    /// `writes` each on its own, all at once.
    async fn write_each(&self, writes: Vec<Write>) -> Result<()> {
        futures::future::try_join_all(writes.iter().map(|w| async move {
            match w {
                Write::Put(record) => self.put(record).await,
                Write::Delete(address) => self.remove(address).await,
            }
        }))
        .await?;
        Ok(())
    }

    pub async fn remove(&self, address: &Address) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&self.pk))
            .key("sk", s(format!("{RESOURCE_PREFIX}{address}")))
            .send()
            .await
            .ctx(format!("removing {address} from the state"))?;
        Ok(())
    }

    /// The serial's bump as one action of a transaction (see [`Store::bump_serial`]).
    fn bump(&self, gpu: Option<bool>) -> Result<Update> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(&self.pk))
            .key("sk", s("meta"))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":now", s(now_rfc3339()));
        let update = match gpu {
            Some(gpu) => update
                .update_expression("ADD serial :one SET updated = :now, gpu = :gpu")
                .expression_attribute_values(":gpu", AttributeValue::Bool(gpu)),
            None => update.update_expression("ADD serial :one SET updated = :now REMOVE gpu"),
        };
        Ok(update.build()?)
    }

    /// Bumps the serial (a saved plan made before is refused from now on); records the GPU mode.
    pub async fn bump_serial(&self, gpu: Option<bool>) -> Result<u64> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&self.pk))
            .key("sk", s("meta"))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":now", s(now_rfc3339()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        req = match gpu {
            Some(gpu) => req
                .update_expression("ADD serial :one SET updated = :now, gpu = :gpu")
                .expression_attribute_values(":gpu", AttributeValue::Bool(gpu)),
            None => req.update_expression("ADD serial :one SET updated = :now REMOVE gpu"),
        };
        let out = req.send().await.ctx("bumping the state serial")?;
        Ok(out
            .attributes()
            .and_then(|a| a.get("serial"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}

/// A new record for `address` after an action.
pub fn record(
    address: &Address,
    handle: Handle,
    attributes: Attrs,
    deps: Vec<Address>,
    suffix: Option<u32>,
) -> Record {
    Record {
        address: address.clone(),
        handle,
        hash: hash_attrs(&attributes),
        attributes,
        deps,
        suffix,
        deposed: Vec::new(),
        updated: now_rfc3339(),
    }
}

/// Addresses by kind, for `output`.
pub fn by_kind(
    records: &BTreeMap<Address, Record>,
    kind: Kind,
) -> impl Iterator<Item = (&str, &Record)> {
    records
        .values()
        .filter(move |r| r.handle.kind == kind)
        .map(|r| (r.address.key.as_str(), r))
}
