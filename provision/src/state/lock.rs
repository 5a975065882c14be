//! The stack's lock: one item taken with a conditional write, so of two applies exactly one
//! proceeds. It expires after an hour unless renewed (a crashed apply does not lock the stack
//! forever) and is renewed while a long apply runs.
//!
//! A release does not delete the item: it marks it released (`released` = the holder's token),
//! so that every hand-over leaves a lock item no earlier one equals. That lets apply read the
//! state beside taking the lock, in one round trip: the lock's write answers the item it
//! replaced, and the state read saw the lock item too; when both are the same item (or the
//! read saw our own lock), nobody held the lock between the read and our taking it, so the
//! read saw every write of the previous holder and none of a later one. Otherwise the state is
//! read again under the lock ([`Lock::saw_unchanged`]).

use std::time::Duration;

use anyhow::Result;
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};

use super::{now_rfc3339, Finish, Store};
use crate::resources::SdkContext;

const TTL: chrono::Duration = chrono::Duration::hours(1);
const RENEW_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub holder: String,
    pub operation: String,
    pub acquired: String,
    pub expires: String,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} since {}, expires {})",
            self.holder, self.operation, self.acquired, self.expires
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the state of {pk} is locked by {info}; wait for it to finish, or run `provision state unlock --force` if that process is gone")]
    Held { pk: String, info: LockInfo },
    /// The state table does not exist (nothing was ever applied with it in this region).
    #[error("state table {table} does not exist")]
    NoTable { table: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// `user@host pid N`: who holds the lock, for the other process's error message.
pub fn holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host} pid {}", std::process::id())
}

fn expiry() -> String {
    (chrono::Utc::now() + TTL).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// The lock item as a state read or the lock's own write saw it: enough to tell two
/// versions of it apart (every acquisition has its own token; a release marks it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockSeen {
    pub token: Option<String>,
    pub expires: Option<String>,
    pub released: Option<String>,
}

impl LockSeen {
    /// The lock part of a state item, when it is the lock item.
    pub fn of(item: &std::collections::HashMap<String, AttributeValue>) -> Option<LockSeen> {
        let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let seen = LockSeen {
            token: get("token"),
            expires: get("expires"),
            released: get("released"),
        };
        (seen != LockSeen::default()).then_some(seen)
    }
}

/// A held lock; release it with [`Lock::release`] or [`Lock::release_with`].
pub struct Lock {
    store: Store,
    token: String,
    /// The lock item this lock replaced (absent: there was none).
    previous: Option<LockSeen>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lock {
    /// Takes the lock for `operation`, or reports who holds it. An expired or released lock
    /// is taken over in the same conditional write.
    pub async fn acquire(store: &Store, operation: &str) -> std::result::Result<Lock, LockError> {
        let holder = holder();
        let now = now_rfc3339();
        let token = hex::encode(Sha256::digest(format!(
            "{holder} {:?}",
            std::time::SystemTime::now()
        )));
        let put = store
            .client
            .put_item()
            .table_name(&store.table)
            .item("pk", s(&store.pk))
            .item("sk", s("lock"))
            .item("holder", s(&holder))
            .item("operation", s(operation))
            .item("acquired", s(&now))
            .item("expires", s(expiry()))
            .item("token", s(&token))
            .condition_expression(
                "attribute_not_exists(sk) OR attribute_exists(#released) OR #expires < :now",
            )
            .expression_attribute_names("#expires", "expires")
            .expression_attribute_names("#released", "released")
            .expression_attribute_values(":now", s(&now))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        let previous = match put {
            Ok(out) => out.attributes().and_then(LockSeen::of),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Err(LockError::NoTable {
                    table: store.table.clone(),
                })
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                let info = read(store).await?.unwrap_or(LockInfo {
                    holder: "another process".into(),
                    operation: "unknown".into(),
                    acquired: "unknown".into(),
                    expires: "unknown".into(),
                });
                return Err(LockError::Held {
                    pk: store.pk.clone(),
                    info,
                });
            }
            Err(e) => {
                return Err(LockError::Other(
                    anyhow::Error::msg(crate::resources::describe_error(&e))
                        .context("taking the state lock"),
                ))
            }
        };
        let renew_store = store.clone();
        let renew_token = token.clone();
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let _ = renew_store
                    .client
                    .update_item()
                    .table_name(&renew_store.table)
                    .key("pk", s(&renew_store.pk))
                    .key("sk", s("lock"))
                    .update_expression("SET #expires = :expires")
                    .condition_expression("#token = :token")
                    .expression_attribute_names("#expires", "expires")
                    .expression_attribute_names("#token", "token")
                    .expression_attribute_values(":expires", s(expiry()))
                    .expression_attribute_values(":token", s(&renew_token))
                    .send()
                    .await;
            }
        });
        Ok(Lock {
            store: store.clone(),
            token,
            previous,
            renewer,
        })
    }

    /// Whether a state read made beside taking this lock saw the lock item as this lock
    /// found it (or saw this lock itself): then nobody held the lock between that read and
    /// now, and the read is what a read under the lock would have answered. `seen` is the
    /// lock item the read answered (absent: none); `None` when the read did not finish.
    pub fn saw_unchanged(&self, seen: Option<&Option<LockSeen>>) -> bool {
        seen.is_some_and(|seen| unchanged(seen, &self.previous, &self.token))
    }

    /// The conditional update that marks this lock released (see the module's note).
    fn release_update(
        &self,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.store
            .client
            .update_item()
            .table_name(&self.store.table)
            .key("pk", s(&self.store.pk))
            .key("sk", s("lock"))
            .update_expression(RELEASE)
            .condition_expression(STILL_OURS)
            .set_expression_attribute_names(Some(release_names()))
            .set_expression_attribute_values(Some(release_values(&self.token)))
    }

    /// Releases the lock if it is still ours.
    pub async fn release(self) -> Result<()> {
        self.renewer.abort();
        let out = self.release_update().send().await;
        match out {
            Ok(_) => Ok(()),
            // Someone forced it away; nothing of ours to release.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(e).ctx("releasing the state lock"),
        }
    }

    /// Writes what an apply or destroy left for its end (the serial bump, the last records,
    /// the entries to forget) and releases the lock, in one TransactWriteItems: one round
    /// trip instead of one after another. Nothing to write: a plain release. Should the lock
    /// have been forced away meanwhile, the writes are made without it.
    pub async fn release_with(self, finish: Finish) -> Result<()> {
        if finish.is_empty() {
            return self.release().await;
        }
        self.renewer.abort();
        let store = self.store.clone();
        // A transaction takes 100 actions: the lock's, the serial's, and 98 entries.
        let mut writes = finish.writes();
        let overflow = writes.len().saturating_sub(MAX_TRANSACTION - 2);
        let rest: Vec<_> = writes.drain(..overflow).collect();
        Store::write_each(&store, rest).await?;
        let mut items = vec![TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&store.table)
                    .key("pk", s(&store.pk))
                    .key("sk", s("lock"))
                    .update_expression(RELEASE)
                    .condition_expression(STILL_OURS)
                    .set_expression_attribute_names(Some(release_names()))
                    .set_expression_attribute_values(Some(release_values(&self.token)))
                    .build()?,
            )
            .build()];
        if let Some(gpu) = finish.bump {
            items.push(
                TransactWriteItem::builder()
                    .update(store.bump(gpu)?)
                    .build(),
            );
        }
        for write in &writes {
            items.push(store.transact_item(write)?);
        }
        let out = store
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            // A retry of a transaction that went through is then answered, not applied again
            // (the serial would move twice).
            .client_request_token(&self.token[..36.min(self.token.len())])
            .send()
            .await;
        let forced = match out {
            Ok(_) => return Ok(()),
            Err(e) => lock_condition_failed(&e),
        };
        // The same writes one by one; then, unless the lock was forced away meanwhile (nothing
        // of ours to release), the plain release.
        Store::write_each(&store, writes).await?;
        if let Some(gpu) = finish.bump {
            store.bump_serial(gpu).await?;
        }
        if forced {
            return Ok(());
        }
        self.release().await
    }
}

const MAX_TRANSACTION: usize = 100;

/// The transaction was cancelled by its first action's condition: the lock is not ours.
fn lock_condition_failed(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
    >,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
            .cancellation_reasons()
            .first()
            .and_then(|r| r.code())
            .is_some_and(|code| code == "ConditionalCheckFailed"),
        _ => false,
    }
}

/// Whether a read that saw the lock item as `seen` was made while nobody else held the lock:
/// it saw the item our write replaced (`previous`), or our own lock (`token`).
fn unchanged(seen: &Option<LockSeen>, previous: &Option<LockSeen>, token: &str) -> bool {
    seen == previous
        || seen
            .as_ref()
            .is_some_and(|l| l.token.as_deref() == Some(token) && l.released.is_none())
}

/// The lock being taken on a task of its own, beside the reads of a plan (see the module's
/// note). Await [`Taking::taken`] whatever else fails: a lock taken must be released.
pub struct Taking(tokio::task::JoinHandle<std::result::Result<Lock, LockError>>);

impl Taking {
    /// Starts taking the lock for `operation`: its write at once, beside the plan's first
    /// reads (the table and the lock's key are known from the stack), with no DescribeTable
    /// before it. Only a write that finds no table (ResourceNotFoundException: missing, or
    /// not ACTIVE yet) goes further: with `create_table` the table is created once that
    /// answers `true` (a first apply whose credentials check passed; a table that exists
    /// already is left as it is) and the lock taken once it is ACTIVE (see
    /// [`acquire_once_active`]); without (or answered `false`), a missing table is
    /// [`LockError::NoTable`] and nothing is written.
    pub fn start(
        store: &Store,
        operation: &str,
        create_table: Option<tokio::sync::oneshot::Receiver<bool>>,
    ) -> Taking {
        let store = store.clone();
        let operation = operation.to_string();
        Taking(tokio::spawn(async move {
            match Lock::acquire(&store, &operation).await {
                Err(LockError::NoTable { .. }) => {}
                // Taken, held by another, or refused for another reason.
                taken => return taken,
            }
            let no_table = || LockError::NoTable {
                table: store.table.clone(),
            };
            match create_table {
                Some(confirmed) => {
                    // Refused credentials: their own error says why, nothing more to ask.
                    if !confirmed.await.unwrap_or(false) {
                        return Err(no_table());
                    }
                    store.create_table().await?;
                }
                None => {
                    if store.table_status().await?.is_none() {
                        return Err(no_table());
                    }
                }
            }
            acquire_once_active(&store, &operation).await
        }))
    }

    pub async fn taken(self) -> std::result::Result<Lock, LockError> {
        self.0
            .await
            .map_err(|e| LockError::Other(anyhow::anyhow!("taking the state lock: {e}")))?
    }
}

/// Takes the lock on a table that is not ACTIVE yet (just created, by us or by another first
/// apply): DynamoDB refuses item writes with ResourceNotFoundException until it is, so the
/// lock's own write is the poll, instead of DescribeTable until ACTIVE and then the write (one
/// round trip less). Gives up after [`super::TABLE_ACTIVE_WITHIN`].
async fn acquire_once_active(
    store: &Store,
    operation: &str,
) -> std::result::Result<Lock, LockError> {
    let deadline = tokio::time::Instant::now() + super::TABLE_ACTIVE_WITHIN;
    let mut pause = Duration::from_millis(100);
    loop {
        match Lock::acquire(store, operation).await {
            Err(LockError::NoTable { table }) => {
                if tokio::time::Instant::now() + pause > deadline {
                    return Err(LockError::Other(anyhow::anyhow!(
                        "state table {table} did not become ACTIVE within {} s; see it with `aws dynamodb describe-table --table-name {table}`, then run the command again",
                        super::TABLE_ACTIVE_WITHIN.as_secs()
                    )));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            taken => return taken,
        }
    }
}

/// A release: the item stays, marked with the holder's token; `expires` moves to now, so
/// that a build from before the mark (which knows only expiry) sees it as free too.
const RELEASE: &str = "SET #released = :token, #expires = :now";
const STILL_OURS: &str = "#token = :token AND attribute_not_exists(#released)";

fn release_names() -> std::collections::HashMap<String, String> {
    [
        ("#released", "released"),
        ("#expires", "expires"),
        ("#token", "token"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn release_values(token: &str) -> std::collections::HashMap<String, AttributeValue> {
    [(":token", s(token)), (":now", s(now_rfc3339()))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Who holds the lock now (absent: nobody; a released lock is nobody's).
pub async fn read(store: &Store) -> Result<Option<LockInfo>> {
    let out = store
        .client
        .get_item()
        .table_name(&store.table)
        .key("pk", s(&store.pk))
        .key("sk", s("lock"))
        .consistent_read(true)
        .send()
        .await
        .ctx("reading the state lock")?;
    let held = out.item().filter(|item| !item.contains_key("released"));
    Ok(held.map(|item| {
        let get = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default()
        };
        LockInfo {
            holder: get("holder"),
            operation: get("operation"),
            acquired: get("acquired"),
            expires: get("expires"),
        }
    }))
}

/// Is the lock past its expiry?
pub fn expired(info: &LockInfo) -> bool {
    info.expires < now_rfc3339()
}

/// Removes the lock whoever holds it.
pub async fn remove(store: &Store) -> Result<()> {
    store
        .client
        .delete_item()
        .table_name(&store.table)
        .key("pk", s(&store.pk))
        .key("sk", s("lock"))
        .send()
        .await
        .ctx("removing the state lock")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(token: &str, expires: &str, released: bool) -> Option<LockSeen> {
        Some(LockSeen {
            token: Some(token.into()),
            expires: Some(expires.into()),
            released: released.then(|| token.to_string()),
        })
    }

    #[test]
    fn a_state_read_counts_only_when_nobody_held_the_lock_since() {
        let released_by_a = lock("a", "2026-01-01T00:00:00Z", true);
        // The read saw what our write replaced: nobody came between.
        assert!(unchanged(&released_by_a, &released_by_a, "me"));
        assert!(unchanged(&None, &None, "me"));
        // The read saw our own lock: it came after our write.
        assert!(unchanged(
            &lock("me", "2026-01-01T01:00:00Z", false),
            &released_by_a,
            "me"
        ));
        // A held the lock when the state was read and released it before our write: its
        // writes may be half seen.
        assert!(!unchanged(
            &lock("a", "2026-01-01T01:00:00Z", false),
            &released_by_a,
            "me"
        ));
        // Nobody had ever locked when the state was read; A did (and released) before us.
        assert!(!unchanged(&None, &released_by_a, "me"));
        // B took A's released lock, wrote and released between our read and our write.
        assert!(!unchanged(
            &released_by_a,
            &lock("b", "2026-01-01T00:05:00Z", true),
            "me"
        ));
        // An expired lock renewed between the read and the takeover is another version.
        assert!(!unchanged(
            &lock("a", "2026-01-01T00:00:00Z", false),
            &lock("a", "2026-01-01T00:10:00Z", false),
            "me"
        ));
    }
}
