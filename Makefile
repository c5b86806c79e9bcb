# The two commands a newcomer needs: `make run` (the service) and `make test` (everything).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# The baselines (MLServer, FastAPI + pandas) need their own venv: never in the runtime requirements.
BENCH_VENV := .venv-bench
# KServe's client, which the gRPC tests drive, cannot share a process or a venv with tritonclient.grpc.
KSERVE_VENV := .venv-kserve
# Each benchmark peer in its own venv from its own pinned requirements file.
PEER_KSERVE_VENV := .venv-peer-kserve
PEER_LITSERVE_VENV := .venv-peer-litserve
PEER_BENTOML_VENV := .venv-peer-bentoml
PEER_VENVS := $(PEER_KSERVE_VENV) $(PEER_LITSERVE_VENV) $(PEER_BENTOML_VENV)
# e.g. `make bench BENCH_ARGS=--quick`
BENCH_ARGS ?=
# Debian packages the test suite drives for real (browser test, container test, benchmark smoke test with wrk
# and h2load from nghttp2-client, qemu-user for training on an emulated CPU of the other vendor, Prometheus and
# promtool, curl for the README's examples).
APT_TEST_PACKAGES := chromium chromium-driver podman runc debootstrap wrk nghttp2-client qemu-user prometheus curl
# The load generators: wrk for HTTP/1.1, h2load (Debian's nghttp2-client) for gRPC.
BENCH_APT_PACKAGES := wrk nghttp2-client

.PHONY: run test soak export bench protos system-deps bench-deps clean

run: $(VENV)/.runtime
	$(PY) -m serve

# Lint and type-check first: they take seconds, the suite minutes.
test: $(VENV)/.dev $(KSERVE_VENV)/.installed $(PEER_VENVS:%=%/.installed) system-deps
	$(PY) -m ruff check .
	$(PY) -m mypy serve
	$(PY) -m pytest

# The soak test for 10 minutes instead of the 60 s it runs in `make test`; e.g. `make soak SOAK_SECONDS=3600`.
SOAK_SECONDS ?= 600
soak: $(VENV)/.dev
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -s tests/test_soak.py

export: $(VENV)/.export
	$(PY) -m export

bench: $(VENV)/.export $(BENCH_VENV)/.installed $(PEER_VENVS:%=%/.installed) bench-deps
	$(PY) -m benchmarks $(BENCH_ARGS)

# The gRPC modules are generated from the committed .proto and committed too (the runtime needs no
# grpcio-tools); tests/test_rpc_protocol.py checks that regenerating them changes nothing.
protos: $(VENV)/.dev
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. serve/protocol/open_inference_grpc.proto

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.export: requirements.txt requirements-export.txt | $(VENV)/bin/python
	$(PIP) install -r requirements-export.txt
	touch $@ $(VENV)/.runtime

$(VENV)/.dev: requirements.txt requirements-export.txt requirements-dev.txt | $(VENV)/bin/python
	$(PIP) install -r requirements-dev.txt
	touch $@ $(VENV)/.export $(VENV)/.runtime

$(BENCH_VENV)/.installed: requirements-bench.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip --disable-pip-version-check -q install -r requirements-bench.txt
	touch $@

$(KSERVE_VENV)/.installed: requirements-kserve.txt
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip --disable-pip-version-check -q install -r requirements-kserve.txt
	touch $@

$(PEER_KSERVE_VENV)/.installed: requirements-peer-kserve.txt requirements-kserve.txt
	$(PYTHON) -m venv $(PEER_KSERVE_VENV)
	$(PEER_KSERVE_VENV)/bin/python -m pip --disable-pip-version-check -q install -r requirements-peer-kserve.txt
	touch $@

$(PEER_LITSERVE_VENV)/.installed $(PEER_BENTOML_VENV)/.installed: .venv-peer-%/.installed: requirements-peer-%.txt
	$(PYTHON) -m venv .venv-peer-$*
	.venv-peer-$*/bin/python -m pip --disable-pip-version-check -q install -r $<
	touch $@

bench-deps:
	@missing=$$(for p in $(BENCH_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

system-deps:
	@missing=$$(for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(KSERVE_VENV) $(PEER_VENVS) .pytest_cache
