# The two commands: `make demo` and `make test`. Everything else is for development.
SHELL := /bin/bash
CARGO ?= cargo
STACK ?= stacks/orderflow.toml
ENV ?=
GPU ?=
STACK_FLAGS = --stack $(STACK) $(if $(ENV),--env $(ENV)) $(if $(GPU),--set gpu=$(GPU))
PROVISION = target/debug/provision
RUNTIME = target/debug/runtime

.PHONY: test demo build venv emulator emulator-stop plan deploy destroy bench bench-train lint
.PHONY: registry release image push upload-data submit-data-jobs submit-jobs submit-job bench-image

## make test: every test of the workspace, against a moto server and a container registry on
## loopback that the tests start themselves.
test: venv registry browser
	$(CARGO) test --workspace

## make demo: start the emulator, apply the reference stack, run the pipeline, destroy.
demo: venv registry build
	scripts/demo.sh

build:
	$(CARGO) build --workspace

## make lint: what CI checks before the tests: formatting, and clippy with every warning an error.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

venv:
	scripts/venv.sh

## make registry: install the loopback container registry the tests push to (docker-registry).
registry:
	scripts/setup-registry.sh
## make browser: headless chromium + chromedriver for the dashboard's page tests (apt; skipped
## with a message where it cannot install).
.PHONY: browser
browser:
	scripts/setup-browser.sh

## make emulator: a moto server in the background; prints the exports to use it.
emulator:
	@scripts/emulator.sh start

emulator-stop:
	@scripts/emulator.sh stop

plan: build
	$(PROVISION) plan $(STACK_FLAGS)

## make deploy [ENV=dev] [GPU=true]: image -> apply -> push -> apply. The first apply creates
## the repository (and whatever else the stack changed); the second pins the pushed digest in
## the job definitions, a new revision of each.
deploy: image
	$(PROVISION) apply $(STACK_FLAGS)
	$(PROVISION) image push $(STACK_FLAGS)
	$(PROVISION) apply $(STACK_FLAGS)

destroy: build
	$(PROVISION) destroy $(STACK_FLAGS)

## make release [GPU=true]: the release binaries (the gpu flavour's runtime with CUDA).
release:
	$(CARGO) build --workspace --release $(if $(filter true,$(GPU)),--features runtime/cuda)

## make image [ENV=...] [GPU=true]: the jobs' image from the release runtime, without Docker
## -> target/image/{cpu,gpu} (an OCI image layout). RUNTIME_BIN=path uses another binary.
RUNTIME_BIN ?= target/release/runtime
image: build $(if $(filter target/release/runtime,$(RUNTIME_BIN)),release)
	$(PROVISION) image build $(STACK_FLAGS) --binary $(RUNTIME_BIN)

## make push: the built image to the stack's ECR repository, tagged {git sha} and cpu/gpu.
## REGISTRY=host[:port] pushes through a mirror or a local registry instead.
push: build
	$(PROVISION) image push $(STACK_FLAGS) $(if $(REGISTRY),--registry $(REGISTRY))

## make upload-data DATA=dir [DEST=data/raw]: sync a local directory to the stack's bucket
## (only new or changed files).
upload-data: build
	@test -n "$(DATA)" || { echo "usage: make upload-data DATA=dir [DEST=bucket-key/prefix]" >&2; exit 1; }
	$(PROVISION) upload $(STACK_FLAGS) $(DATA) $(or $(DEST),data/raw)

## make submit-data-jobs / submit-jobs: every matrix value of the data (DATA_JOB) or training
## (TRAIN_JOB) job at once; make submit-job DATASET=x: one training job. The defaults are the
## loan-default stack's job names: make submit-jobs STACK=stacks/loan-default.toml ENV=dev
DATA_JOB ?= data
TRAIN_JOB ?= experiment
submit-data-jobs: build
	$(PROVISION) submit $(STACK_FLAGS) $(DATA_JOB) --all

submit-jobs: build
	$(PROVISION) submit $(STACK_FLAGS) $(TRAIN_JOB) --all

submit-job: build
	@test -n "$(DATASET)" || { echo "usage: make submit-job DATASET=name" >&2; exit 1; }
	$(PROVISION) submit $(STACK_FLAGS) $(TRAIN_JOB)-$(DATASET)

## make bench-image: CPU image build from the release runtime, `provision image build` vs
## tar + gzip + sha256sum of the same files -> bench/image.md (needs the release build that
## bench-prepare makes).
bench-image: release
	bench/image.sh

## make bench: every benchmark, each side by side with the tool a user would otherwise pick.
bench: bench-plan bench-prepare bench-train bench-latency bench-image

## make bench-plan: no-op plan of the reference stack against moto vs `cdk synth` -> bench/
.PHONY: bench-plan bench-prepare bench-train bench-train-gpu
bench-plan: venv
	bench/run.sh

## make bench-train: training samples/s, burn (this runtime) vs PyTorch, same CPU, 2 threads -> bench/train.md
bench-train:
	bench/train.sh $(or $(THREADS),2)

## make bench-train-gpu: the same on an NVIDIA GPU, burn's CUDA backend vs PyTorch (cuDNN), plus one
## `runtime train --device cuda` end to end -> bench/train-gpu.md (needs a driver and NVRTC)
bench-train-gpu:
	bench/train_gpu.sh

## make bench-fanout: submit of 5,000 ids, provision vs the boto3 submit scripts' loop, against moto -> bench/fanout.md
.PHONY: bench-fanout
bench-fanout: venv
	bench/fanout.sh
## make bench-logs: requests to read an array job of 100 children, `provision logs` vs a per-job
## script, against moto -> bench/logs.md
.PHONY: bench-logs
bench-logs: venv
	bench/logs.sh

## make bench-prepare: `runtime prepare` vs Python polars on 1e6 and 1e7 rows -> bench/prepare.md
bench-prepare:
	$(CARGO) build --workspace --release
	bench/prepare.sh

## make bench-latency: plan, apply and destroy of the reference stack with every request held 50
## and 100 ms, as AWS's latency holds it: round trips one after another -> bench/latency.md
.PHONY: bench-latency
bench-latency: venv
	$(CARGO) build --workspace --bins
	$(CARGO) build --workspace --example bench_latency
	target/debug/examples/bench_latency $(PROVISION)
## make bench-jobs: requests `provision jobs` makes to list 10,000 jobs vs a boto3 paginator
## (what a submit script does) against moto -> bench/jobs.md
## make bench-ui: the dashboard's first page and its jobs page with 1,000 jobs -> bench/ui.md
.PHONY: bench-jobs bench-ui
bench-jobs: venv
	$(CARGO) test --workspace --test it -- --ignored --exact joblist::bench_listing_10000_jobs --nocapture
bench-ui: venv browser
	$(CARGO) test --workspace --test it -- --ignored --exact ui::bench_dashboard --nocapture
