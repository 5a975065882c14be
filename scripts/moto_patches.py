"""Small patches that hold moto to AWS rules the tool depends on (DESIGN.md §5).

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
