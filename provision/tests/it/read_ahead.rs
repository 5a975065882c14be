//! Reads that go by what the state recorded: a role's inline policies (and a compute
//! environment's launch template) are read beside the rest by the recorded names, so that a
//! plan is two round trips deep. What AWS holds beyond the record must still be read, and what
//! the record names but AWS lacks must not fail the read.

use provision::aws::Clients;
use serde_json::Value;

use crate::common::{Provision, StackCopy};

async fn clients() -> Clients {
    let loader = provision::aws::with_retries(testkit::emulator().config_loader());
    Clients::from_config(loader.load().await)
}

/// The keys of `role.job`'s inline policies in a JSON plan: (live, desired).
fn inline_policy_names(plan: &Value) -> (Vec<String>, Vec<String>) {
    let change = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "role.job")
        .unwrap_or_else(|| panic!("role.job unchanged: {plan:#}"));
    let attribute = change["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "inline_policies")
        .unwrap_or_else(|| panic!("no inline_policies change: {change:#}"));
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect();
    (keys(&attribute["before"]), keys(&attribute["after"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn inline_policies_beyond_the_recorded_ones_are_read_and_deleted() {
    let stack = StackCopy::orderflow_without_endpoint("readahead");
    let role = format!("{}-job", stack.p());
    stack.apply(&[]);
    let c = clients().await;

    // Outside the tool: the recorded policy removed, another one put in its place.
    c.iam()
        .delete_role_policy()
        .role_name(&role)
        .policy_name("stack-buckets")
        .send()
        .await
        .unwrap();
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::elsewhere"}]}"#;
    c.iam()
        .put_role_policy()
        .role_name(&role)
        .policy_name("added-outside")
        .policy_document(doc)
        .send()
        .await
        .unwrap();

    let plan = stack.plan_json(&[]);
    assert_eq!(
        inline_policy_names(&plan),
        (vec!["added-outside".into()], vec!["stack-buckets".into()]),
        "{plan:#}"
    );
    let text = plan.to_string();
    assert!(
        text.contains("arn:aws:s3:::elsewhere"),
        "its document: {text}"
    );

    // destroy deletes the policy it did not record, then the role.
    stack.expect(&["destroy", "--auto-approve"], 0);
    let gone = c.iam().get_role().role_name(&role).send().await;
    assert!(
        gone.as_ref().is_err_and(|e| e
            .as_service_error()
            .is_some_and(|s| s.is_no_such_entity_exception())),
        "{gone:?}"
    );
}
