//! The emulator harness works: clients built as the tool builds them (its retries and timeouts),
//! given the emulator's endpoint, region and credentials, reach the moto server the harness
//! started.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, KeySchemaElement, KeyType, ScalarAttributeType,
};

#[tokio::test]
async fn sdk_round_trip_through_the_tools_client() {
    let loader = provision::aws::with_retries(testkit::emulator().config_loader());
    let clients = provision::aws::Clients::from_config(loader.load().await);
    let table = testkit::unique_name("harness");
    clients
        .dynamodb()
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    let described = clients
        .dynamodb()
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.table().unwrap().table_name(),
        Some(table.as_str())
    );

    let bucket = testkit::unique_name("harness-bucket");
    clients
        .s3()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    clients
        .s3()
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .expect("put object (path-style addressing)");
    let got = clients
        .s3()
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"hello"
    );
}
