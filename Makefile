# `make test` and `make demo` do every set-up step on a fresh machine.
PYTHON ?= python3
VENV := .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: test lint typecheck unit e2e rules-test bench venv clean testenv testenv-down testenv-build \
	crds demo demo-down prometheus lint-manifests helm kstatus chart image docs monitoring

venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -e '.[dev,plot]'
	rm -f $(VENV)/.installed-*
	touch $@

test: lint typecheck rules-test unit e2e

lint: venv
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

# checkov and kube-score on the rendered examples and the install; not part of `make test`
# (it downloads both linters, pinned, on first use). Findings: docs/reliability.md.
lint-manifests: venv
	hack/lint-manifests.sh

unit: venv helm kstatus
	$(BIN)/pytest tests/unit tests/golden

e2e: venv prometheus helm kstatus
	$(BIN)/pytest tests/e2e

# The alert and recording rules (manifests/monitoring/rules) checked and unit-tested by promtool,
# which Debian's prometheus package ships.
rules-test: prometheus
	promtool check rules manifests/monitoring/rules/rules.yaml
	promtool test rules tests/rules/*.yaml

# The autoscaling e2e tests run a real Prometheus: Debian's package.
prometheus:
	@command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    prometheus >/dev/null; }

bench: venv
	$(BIN)/python bench/planner_latency.py
	$(BIN)/python bench/sizing_accuracy.py --picture docs/img/sizing-accuracy.svg
	$(BIN)/python bench/autoscale_compare.py

crds: venv
	$(BIN)/llmdeploy crd > crds/llmdeployments.yaml

# The PrometheusRule (from rules.yaml) and the Grafana dashboard of manifests/monitoring
# (tests/unit/test_monitoring.py fails when they are stale).
monitoring: venv
	$(BIN)/python -m llmdeploy.monitoring

# Generated docs (tests/unit/test_docs.py fails when they are stale).
docs: venv
	$(BIN)/python -m llmdeploy.controller.settings > docs/settings.md

# helm v4, built from the Go module proxy into ~/.cache/llmdeploy-helm/<version>/ once.
helm:
	@hack/helm.sh >/dev/null

# kstatus-check (hack/kstatus): the kstatus library Flux uses, built once into a cache.
kstatus:
	@hack/kstatus.sh >/dev/null

# The chart as an OCI-ready package in dist/ (pushing it: charts/llmdeploy/README.md).
chart: helm
	hack/helm.sh -- lint charts/llmdeploy
	hack/helm.sh -- package charts/llmdeploy --destination dist

# The operator image (Dockerfile), with a container engine; prints how to pin its digest.
image:
	hack/image.sh

demo: venv
	hack/demo.sh

demo-down:
	hack/demo-down.sh

testenv-build:
	hack/testenv/build.sh

testenv:
	hack/testenv/up.sh

testenv-down:
	hack/testenv/down.sh

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
