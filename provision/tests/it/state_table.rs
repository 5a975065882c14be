//! The state table of a first apply: AWS takes seconds to make a new DynamoDB table ACTIVE and
//! refuses item writes until then; the lock's write, tried again, is the wait for it.

use crate::common::{Provision, StackCopy, World};

#[test]
fn first_apply_takes_the_lock_once_the_new_state_table_is_active() {
    // A server of its own where a new table stays CREATING for 2 s.
    let emulator = testkit::start_with_env(&[("MOTO_DYNAMODB_CREATING_SECONDS", "2")]);
    let w = World::new(
        StackCopy::orderflow_without_endpoint("newtable"),
        &emulator.endpoint,
    );
    w.apply(&[]);

    // The forward phase started only under the lock, which the table refused while CREATING.
    let calls: Vec<String> = w.proxy.timeline().into_iter().map(|s| s.call).collect();
    let created = calls
        .iter()
        .position(|c| c == "dynamodb CreateTable")
        .unwrap_or_else(|| panic!("no CreateTable: {calls:#?}"));
    let first_create = calls
        .iter()
        .position(|c| c.starts_with("iam CreateRole"))
        .unwrap_or_else(|| panic!("no CreateRole: {calls:#?}"));
    let lock_writes = calls[created..first_create]
        .iter()
        .filter(|c| *c == "dynamodb PutItem")
        .count();
    assert!(lock_writes >= 2, "the lock's write tried again: {calls:#?}");
    assert!(
        !calls[created..].contains(&"dynamodb DescribeTable".to_string()),
        "no DescribeTable poll: {calls:#?}"
    );

    // Everything was recorded (the reference stack's 14 resources without its S3 endpoint),
    // and the next plan has nothing to do.
    assert_eq!(w.state_list().len(), 14, "{:?}", w.state_list());
    w.expect(&["plan", "--detailed-exitcode"], 0);
}
