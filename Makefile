# The two commands a newcomer needs: `make run` (the service) and `make test` (everything).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# Debian packages the test suite drives for real (browser test, container test).
APT_TEST_PACKAGES := chromium chromium-driver podman runc debootstrap

.PHONY: run test export system-deps clean

run: $(VENV)/.runtime
	$(PY) -m serve

test: $(VENV)/.dev system-deps
	$(PY) -m pytest

export: $(VENV)/.export
	$(PY) -m export

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

system-deps:
	@missing=$$(for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache
