"""Small patches that hold moto to AWS rules the tool depends on (docs/design.md, "The test
emulator").

Each patch is a function registered in PATCHES, with a comment naming the AWS rule it adds and
the reason the tests need it. The tool never special-cases the emulator; the emulator is made
to behave like AWS here instead.
"""

PATCHES = []


def patch(fn):
    PATCHES.append(fn)
    return fn


def apply():
    for fn in PATCHES:
        fn()


@patch
def batch_update_compute_environment_resizes():
    """AWS: UpdateComputeEnvironment changes minvCpus/maxvCpus/desiredvCpus in place (the
    documented in-place updates of a managed environment). moto ignores computeResources, so
    an applied max_vcpus change would read back unchanged and every later plan would show it
    again."""
    from moto.batch.models import BatchBackend

    original = BatchBackend.update_compute_environment

    def update_compute_environment(self, compute_environment_name, state, compute_resources, service_role):
        name, arn = original(self, compute_environment_name, state, compute_resources, service_role)
        env = self.get_compute_environment(compute_environment_name)
        if env is not None and compute_resources and env.compute_resources is not None:
            for key in ("minvCpus", "maxvCpus", "desiredvCpus"):
                if key in compute_resources:
                    env.compute_resources[key] = compute_resources[key]
        return name, arn

    BatchBackend.update_compute_environment = update_compute_environment


@patch
def s3_get_bucket_versioning_root_element():
    """AWS: GetBucketVersioning answers `<VersioningConfiguration>`. moto 5.2 answers
    `<GetBucketVersioningResponse>`, which boto3 tolerates but the Rust SDK rejects as an
    invalid root, so no tool built on it could read a bucket's versioning."""
    from moto.s3.responses import S3Response

    original = S3Response.get_bucket_versioning

    def get_bucket_versioning(self):
        status, headers, body = original(self)
        if isinstance(body, bytes):
            body = body.replace(b"GetBucketVersioningResponse", b"VersioningConfiguration")
        elif isinstance(body, str):
            body = body.replace("GetBucketVersioningResponse", "VersioningConfiguration")
        return status, headers, body

    S3Response.get_bucket_versioning = get_bucket_versioning


@patch
def batch_lifecycle_rules():
    """AWS Batch rules the engine's create-before-destroy replacement depends on, which moto
    lacks (it makes everything VALID at once and deletes anything):

    - a compute environment or job queue passes through CREATING / UPDATING / DELETING for
      MOTO_BATCH_TRANSITION_SECONDS (default 0: at once, as moto does; the hardening tests
      start a server with 1-2 s) before it is VALID or gone, and refuses another update or a
      delete meanwhile ("resource is being modified");
    - an ENABLED compute environment cannot be deleted (disable it first);
    - a compute environment that a job queue still names cannot be deleted ("Cannot delete,
      found existing JobQueue relationship", Terraform AWS provider #2044, #13221);
    - a job queue can only name VALID compute environments, and an ENABLED queue cannot be
      deleted.

    Without these a tool that deletes the old environment before re-pointing the queue, or
    that does not wait, passes every test and fails on AWS."""
    import os
    import threading
    import time

    from moto.batch.exceptions import ClientException
    from moto.batch.models import BatchBackend

    seconds = float(os.environ.get("MOTO_BATCH_TRANSITION_SECONDS", "0"))
    lock = threading.RLock()

    def begin(obj, status):
        obj._transition = (status, time.monotonic() + seconds)

    def status_of(obj):
        transition = getattr(obj, "_transition", None)
        if transition is None:
            return "VALID"
        status, until = transition
        return status if time.monotonic() < until else "VALID"

    def busy(obj, what, name):
        if status_of(obj) in ("CREATING", "UPDATING", "DELETING"):
            raise ClientException(f"Cannot update {what} {name}: resource is being modified ({status_of(obj)})")

    original_delete_ce = BatchBackend.delete_compute_environment
    original_delete_queue = BatchBackend.delete_job_queue

    def settle(self):
        """Finishes transitions whose time is up: a DELETING resource is removed now."""
        with lock:
            for env in list(self._compute_environments.values()):
                t = getattr(env, "_transition", None)
                if t and t[0] == "DELETING" and time.monotonic() >= t[1]:
                    original_delete_ce(self, env.arn)
            for queue in list(self._job_queues.values()):
                t = getattr(queue, "_transition", None)
                if t and t[0] == "DELETING" and time.monotonic() >= t[1]:
                    original_delete_queue(self, queue.arn)
            for queue in self._job_queues.values():
                queue.status = status_of(queue)

    def wrap(name, before=None, after=None):
        original = getattr(BatchBackend, name)

        def wrapper(self, *args, **kwargs):
            with lock:
                settle(self)
                if before:
                    before(self, *args, **kwargs)
                result = original(self, *args, **kwargs)
                if after:
                    after(self, result, *args, **kwargs)
                return result

        setattr(BatchBackend, name, wrapper)

    def arg(args, kwargs, name, index):
        return kwargs[name] if name in kwargs else (args[index] if len(args) > index else None)

    def after_create_ce(self, result, *args, **kwargs):
        env = self.get_compute_environment(arg(args, kwargs, "compute_environment_name", 0))
        if env is not None:
            begin(env, "CREATING")

    def before_update_ce(self, *args, **kwargs):
        env = self.get_compute_environment(arg(args, kwargs, "compute_environment_name", 0))
        if env is not None:
            busy(env, "compute environment", env.name)

    def after_update_ce(self, result, *args, **kwargs):
        env = self.get_compute_environment(arg(args, kwargs, "compute_environment_name", 0))
        if env is not None:
            begin(env, "UPDATING")

    def delete_ce(self, compute_environment_name):
        with lock:
            settle(self)
            env = self.get_compute_environment(compute_environment_name)
            if env is None:
                return original_delete_ce(self, compute_environment_name)
            busy(env, "compute environment", env.name)
            if env.state == "ENABLED":
                raise ClientException(
                    f"Cannot delete compute environment {env.name}: it is ENABLED; disable it first"
                )
            for queue in self._job_queues.values():
                if getattr(queue, "_transition", (None,))[0] == "DELETING":
                    continue
                if any(e.arn == env.arn for e in queue.environments):
                    raise ClientException("Cannot delete, found existing JobQueue relationship")
            begin(env, "DELETING")

    def check_order(self, compute_env_order):
        for item in compute_env_order or []:
            env = self.get_compute_environment(item.get("computeEnvironment", ""))
            if env is not None and status_of(env) != "VALID":
                raise ClientException(
                    f"Compute environment {env.name} is not VALID ({status_of(env)}); a job queue can only use VALID ones"
                )

    def before_create_queue(self, *args, **kwargs):
        check_order(self, arg(args, kwargs, "compute_env_order", 4))

    def after_create_queue(self, queue, *args, **kwargs):
        begin(queue, "CREATING")
        queue.status = status_of(queue)

    def before_update_queue(self, *args, **kwargs):
        queue = self.get_job_queue(arg(args, kwargs, "queue_name", 0))
        if queue is not None:
            busy(queue, "job queue", queue.name)
        check_order(self, arg(args, kwargs, "compute_env_order", 3))

    def after_update_queue(self, result, *args, **kwargs):
        queue = self.get_job_queue(arg(args, kwargs, "queue_name", 0))
        if queue is not None:
            begin(queue, "UPDATING")
            queue.status = status_of(queue)

    def delete_queue(self, queue_name):
        with lock:
            settle(self)
            queue = self.get_job_queue(queue_name)
            if queue is None:
                return
            busy(queue, "job queue", queue.name)
            if queue.state == "ENABLED":
                raise ClientException(f"Cannot delete job queue {queue.name}: it is ENABLED; disable it first")
            begin(queue, "DELETING")
            queue.status = "DELETING"

    original_describe_ce = BatchBackend.describe_compute_environments

    def describe_ce(self, environments=None):
        with lock:
            settle(self)
            result = original_describe_ce(self, environments)
            for item in result:
                env = self._compute_environments.get(item["computeEnvironmentArn"])
                if env is not None:
                    item["status"] = status_of(env)
                    if item["status"] != "VALID":
                        item["statusReason"] = f"Compute environment is {item['status'].lower()}"
            return result

    wrap("create_compute_environment", after=after_create_ce)
    wrap("update_compute_environment", before=before_update_ce, after=after_update_ce)
    wrap("create_job_queue", before=before_create_queue, after=after_create_queue)
    wrap("update_job_queue", before=before_update_queue, after=after_update_queue)
    wrap("describe_job_queues")
    BatchBackend.delete_compute_environment = delete_ce
    BatchBackend.delete_job_queue = delete_queue
    BatchBackend.describe_compute_environments = describe_ce


@patch
def dispatch_without_rescanning():
    """Speed, not an AWS rule: to route each request moto lists its own package directory (one
    stat per service, ~190) and walks the response class with `inspect.getmembers`. Neither
    changes while the server runs, so both are computed once; a no-op plan's 33 requests take a
    third less time."""
    import functools

    from moto import backends
    from moto.core import responses

    listed = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: listed
    responses.method_names_from_class = functools.cache(responses.method_names_from_class)


@patch
def ecr_sees_the_registry():
    """AWS: an image pushed to an ECR repository's registry endpoint (the Docker registry
    protocol) is the same image that ECR's API lists: BatchGetImage and DescribeImages answer
    its tags and digest. moto's ECR has no registry endpoint. When MOTO_ECR_REGISTRY names a
    registry (`http://127.0.0.1:PORT`, the tests' loopback `docker-registry`), these calls first
    read the asked tags from it, so what `provision image push` pushed there is what ECR
    answers, digest included. It reads with the basic-auth credentials moto's own
    GetAuthorizationToken hands out for the account (user `AWS`, password
    `{account}-auth-token`), as a registry that checks ECR tokens asks for them."""
    import base64
    import json
    import os
    import urllib.error
    import urllib.request

    from moto.ecr.exceptions import ImageAlreadyExistsException
    from moto.ecr.models import ECRBackend

    accept = ", ".join([
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ])

    def authorization(account_id):
        token = base64.b64encode(f"AWS:{account_id}-auth-token".encode()).decode()
        return f"Basic {token}"

    def registry_tags(registry, repository_name, image_ids, auth):
        """The tags asked for, or every tag the registry holds when none is named."""
        if image_ids:
            return [i["imageTag"] for i in image_ids if i.get("imageTag")]
        url = f"{registry}/v2/{repository_name}/tags/list"
        request = urllib.request.Request(url, headers={"Authorization": auth})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.loads(answer.read()).get("tags") or []
        except (urllib.error.URLError, OSError, ValueError):
            return []

    def sync(self, repository_name, image_ids):
        registry = os.environ.get("MOTO_ECR_REGISTRY")
        if not registry or repository_name not in self.repositories:
            return
        auth = authorization(self.account_id)
        for tag in registry_tags(registry, repository_name, image_ids, auth):
            url = f"{registry}/v2/{repository_name}/manifests/{tag}"
            request = urllib.request.Request(url, headers={"Accept": accept, "Authorization": auth})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    body = answer.read().decode()
                    digest = answer.headers.get("Docker-Content-Digest")
                    media_type = answer.headers.get("Content-Type")
            except (urllib.error.URLError, OSError):
                continue
            try:
                self.put_image(repository_name, body, tag, media_type, digest)
            except ImageAlreadyExistsException:
                pass

    for name in ("batch_get_image", "describe_images"):
        original = getattr(ECRBackend, name)

        def wrapped(self, repository_name, registry_id=None, image_ids=None, _original=original):
            sync(self, repository_name, image_ids)
            return _original(self, repository_name, registry_id, image_ids)

        setattr(ECRBackend, name, wrapped)

    original_list = ECRBackend.list_images

    def list_images(self, repository_name, registry_id=None, *args, **kwargs):
        sync(self, repository_name, None)
        return original_list(self, repository_name, registry_id, *args, **kwargs)

    ECRBackend.list_images = list_images


@patch
def logs_filter_log_events_as_aws():
    """AWS: FilterLogEvents interleaves the events of all the streams it searches in time order
    (its `interleaved` flag is ignored and deprecated since 2019), and refuses a
    `logStreamNames` list that names a stream that does not exist (ResourceNotFoundException).
    moto orders by time only when asked, and skips missing streams, so `provision logs` could
    neither rely on the order nor be held to the refusal."""
    from moto.logs.exceptions import ResourceNotFoundException
    from moto.logs.models import LogsBackend

    original = LogsBackend.filter_log_events

    def filter_log_events(self, log_group_name, log_stream_names, start_time, end_time, limit,
                          next_token, filter_pattern, interleaved):
        group = self.groups.get(log_group_name)
        if group is not None and any(name not in group.streams for name in log_stream_names or []):
            raise ResourceNotFoundException("The specified log stream does not exist.")
        return original(self, log_group_name, log_stream_names, start_time, end_time, limit,
                        next_token, filter_pattern, True)

    LogsBackend.filter_log_events = filter_log_events


@patch
def batch_list_jobs_pages_and_time_filters():
    """AWS: ListJobs answers at most `maxResults` jobs per call (default 100, at most 1000) and
    a `nextToken` for the rest; the AFTER_CREATED_AT / BEFORE_CREATED_AT filters select by
    `createdAt` (milliseconds since the epoch), and a filtered list is newest first; each job
    summary of an array job carries `arrayProperties` (`size` for the parent, `index` for a
    child); a queue's list holds array parents, not their children. moto 5.2 answers every job
    in one page, ignores the time filters, lists children with their queue and leaves out
    `arrayProperties`: a listing that never follows `nextToken` would pass here and show 100 of
    10,000 jobs on AWS, and the call counts `provision jobs` is measured by would mean nothing."""
    import json

    from moto.batch.exceptions import ClientException
    from moto.batch.responses import BatchResponse
    from moto.batch.models import datetime2int_milliseconds

    def summary(job):
        item = job.describe_short()
        if job._child_jobs:
            item["arrayProperties"] = {"size": len(job._child_jobs)}
        elif is_child(job):
            item["arrayProperties"] = {"index": job.array_properties["index"]}
        return item

    def created(job):
        return datetime2int_milliseconds(job.job_created_at)

    def is_child(job):
        return "index" in (job.array_properties or {})

    def listjobs(self):
        filters = self._get_param("filters")
        array_job_id = self._get_param("arrayJobId")
        jobs = self.batch_backend.list_jobs(
            job_queue_name=self._get_param("jobQueue"),
            array_job_id=array_job_id,
            job_status=self._get_param("jobStatus"),
            filters=filters,
        )
        if not array_job_id:
            # A queue lists array parents, not their children (those: by arrayJobId).
            jobs = [j for j in jobs if not is_child(j)]
        for f in filters or []:
            if f["name"] not in ("AFTER_CREATED_AT", "BEFORE_CREATED_AT"):
                continue  # JOB_NAME and the others: moto's own list_jobs applied them
            values = [int(v) for v in f.get("values", [])]
            if f["name"] == "AFTER_CREATED_AT":
                jobs = [j for j in jobs if all(created(j) > v for v in values)]
            elif f["name"] == "BEFORE_CREATED_AT":
                jobs = [j for j in jobs if all(created(j) < v for v in values)]
        if filters:
            jobs = sorted(jobs, key=created, reverse=True)
        size = int(self._get_param("maxResults") or 100)
        if not 1 <= size <= 1000:
            raise ClientException("maxResults must be between 1 and 1000")
        start = int(self._get_param("nextToken") or 0)
        result = {"jobSummaryList": [summary(j) for j in jobs[start : start + size]]}
        if start + size < len(jobs):
            result["nextToken"] = str(start + size)
        return json.dumps(result)

    BatchResponse.listjobs = listjobs


@patch
def s3_new_bucket_refuses_its_first_configuration_write():
    """AWS: S3 answers 409 OperationAborted ("A conflicting conditional operation is currently in
    progress against this resource. Please try again.") to a bucket configuration write (its
    tagging, versioning, lifecycle, encryption, public access block, ...) that meets another one
    to the same bucket, and at times to the writes that follow CreateBucket closely; the caller
    is to try again (Terraform AWS provider #7628, #12949). moto accepts every write, so a tool
    that sends a new bucket's settings together and does not retry would pass here and stop
    half-way on AWS. The emulator handles one request at a time, so writes never overlap here;
    instead a new bucket refuses its first configuration write, so every apply that creates a
    bucket meets the rule, at the cost of one retry."""
    import threading

    from moto.s3.responses import S3Response

    lock = threading.Lock()
    settling = set()  # buckets created whose first configuration write is yet to come

    def refused(bucket_name):
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>OperationAborted</Code>'
            "<Message>A conflicting conditional operation is currently in progress against this "
            f"resource. Please try again.</Message><BucketName>{bucket_name}</BucketName></Error>"
        )
        return 409, {"Content-Type": "application/xml"}, body

    def first_write(bucket_name):
        with lock:
            if bucket_name in settling:
                settling.discard(bucket_name)
                return True
            return False

    original_put = S3Response._bucket_response_put
    original_delete = S3Response._bucket_response_delete

    def bucket_response_put(self, request, bucket_name, querystring):
        if querystring:  # a configuration write (?tagging, ?versioning, ...)
            if first_write(bucket_name):
                return refused(bucket_name)
            return original_put(self, request, bucket_name, querystring)
        created = original_put(self, request, bucket_name, querystring)  # CreateBucket
        with lock:
            settling.add(bucket_name)
        return created

    def bucket_response_delete(self, bucket_name, querystring):
        if querystring:  # a configuration delete (?lifecycle, ?tagging, ...)
            if first_write(bucket_name):
                return refused(bucket_name)
        else:  # DeleteBucket
            with lock:
                settling.discard(bucket_name)
        return original_delete(self, bucket_name, querystring)

    S3Response._bucket_response_put = bucket_response_put
    S3Response._bucket_response_delete = bucket_response_delete


@patch
def dynamodb_new_table_is_creating_for_a_while():
    """AWS: a new DynamoDB table is CREATING for some seconds; DescribeTable says so, and item
    reads and writes answer ResourceNotFoundException until it is ACTIVE. moto makes it ACTIVE
    at once. With MOTO_DYNAMODB_CREATING_SECONDS (default 0: at once, as moto does) a new table
    stays CREATING that long, so a test holds a first apply to waiting for its state table."""
    import os
    import time

    seconds = float(os.environ.get("MOTO_DYNAMODB_CREATING_SECONDS", "0"))
    if seconds <= 0:
        return
    from moto.dynamodb.exceptions import ResourceNotFoundException
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original_create = DynamoDBBackend.create_table

    def create_table(self, name, *args, **kwargs):
        table = original_create(self, name, *args, **kwargs)
        table._active_at = time.monotonic() + seconds
        return table

    DynamoDBBackend.create_table = create_table

    def creating(table):
        return time.monotonic() < getattr(table, "_active_at", 0)

    original_describe = Table.describe

    def describe(self, *args, **kwargs):
        out = original_describe(self, *args, **kwargs)
        if creating(self):
            for value in out.values():
                value["TableStatus"] = "CREATING"
        return out

    Table.describe = describe

    def refuse_while_creating(name):
        original = getattr(DynamoDBBackend, name)

        def wrapper(self, table_name, *args, **kwargs):
            table = self.tables.get(table_name)
            if table is not None and creating(table):
                raise ResourceNotFoundException()
            return original(self, table_name, *args, **kwargs)

        setattr(DynamoDBBackend, name, wrapper)

    for name in ("put_item", "get_item", "query", "update_item", "delete_item"):
        refuse_while_creating(name)
