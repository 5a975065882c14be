//! The stack's lock: one item taken with a conditional write, so of two applies exactly one
//! proceeds. It expires after an hour unless renewed (a crashed apply does not lock the stack
//! forever) and is renewed while a long apply runs.

use std::time::Duration;

use anyhow::Result;
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

use super::{now_rfc3339, Store};
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

/// A held lock; release it with [`Lock::release`].
pub struct Lock {
    store: Store,
    token: String,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lock {
    /// Takes the lock for `operation`, or reports who holds it. An expired lock is taken
    /// over in the same conditional write.
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
            .condition_expression("attribute_not_exists(sk) OR #expires < :now")
            .expression_attribute_names("#expires", "expires")
            .expression_attribute_values(":now", s(&now))
            .send()
            .await;
        match put {
            Ok(_) => {}
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
        }
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
            renewer,
        })
    }

    /// Releases the lock if it is still ours.
    pub async fn release(self) -> Result<()> {
        self.renewer.abort();
        let out = self
            .store
            .client
            .delete_item()
            .table_name(&self.store.table)
            .key("pk", s(&self.store.pk))
            .key("sk", s("lock"))
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(&self.token))
            .send()
            .await;
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
}

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
    Ok(out.item().map(|item| {
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
