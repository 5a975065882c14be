"""The boto3 submit script of the topic-modelling users, as its users run it today: one SubmitJob per batch of firm ids,
the ids inline in FIRM_IDS. Usage: fanout_boto3.py IDS_FILE BATCH_SIZE QUEUE DEFINITION PREFIX;
prints one job id per line."""

import sys

import boto3


def submit_quarter_jobs(batch_client, queue, definition, prefix, firm_ids, batch_size):
    batches = [firm_ids[i : i + batch_size] for i in range(0, len(firm_ids), batch_size)]
    job_ids = []
    for idx, batch in enumerate(batches):
        response = batch_client.submit_job(
            jobName=f"{prefix}-batch-{idx:03d}",
            jobQueue=queue,
            jobDefinition=definition,
            containerOverrides={
                "environment": [
                    {"name": "FIRM_IDS", "value": ",".join(batch)},
                    {"name": "BATCH_ID", "value": str(idx)},
                ]
            },
        )
        job_ids.append(response["jobId"])
    return job_ids


def main():
    ids_file, batch_size, queue, definition, prefix = sys.argv[1:6]
    with open(ids_file) as f:
        firm_ids = [line.strip() for line in f if line.strip()]
    client = boto3.client("batch")
    for job_id in submit_quarter_jobs(client, queue, definition, prefix, firm_ids, int(batch_size)):
        print(job_id)


if __name__ == "__main__":
    main()
