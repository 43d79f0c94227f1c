# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit integration controlplane e2e bench bench-smoke install prometheus chromium \
	cluster cluster-binaries gateway-api-crds gateway-binaries clean docs docs-serve docs-reference

# The real control plane of the tests, built from the pinned Go module in controlplane/: kube-apiserver and
# kube-controller-manager (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3), helm (helm.sh/helm/v4)
# and a kstatus checker (sigs.k8s.io/cli-utils). Rebuilt only when the module changes.
CLUSTER_MODULE := controlplane
CLUSTER_BIN    := .cluster/bin
K8S_VERSION    = $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2}' $(CLUSTER_MODULE)/go.mod)
HELM_VERSION   = $(shell awk '$$1 == "helm.sh/helm/v4" {print $$2}' $(CLUSTER_MODULE)/go.mod)
VERSION_PKG    := k8s.io/component-base/version
GO_LDFLAGS     = -s -w -X $(VERSION_PKG).gitVersion=$(K8S_VERSION) \
	-X $(VERSION_PKG).gitMajor=$(word 1,$(subst ., ,$(K8S_VERSION:v%=%))) \
	-X $(VERSION_PKG).gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION:v%=%))) \
	-X $(VERSION_PKG).gitTreeState=clean -X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)

# The Gateway API CRDs of the standard channel, copied from the sigs.k8s.io/gateway-api module pinned in
# controlplane/go.mod (file names kept), for the tests that route traffic with HTTPRoutes.
GATEWAY_API_CRDS    := .cluster/crds/gateway-api
GATEWAY_API_VERSION = $(shell awk '$$1 == "sigs.k8s.io/gateway-api" {print $$2}' $(CLUSTER_MODULE)/go.mod)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The real Prometheus server, from the Debian package, for the analysis tests and the demo.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing the Debian package prometheus"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# Chromium from Debian's packages, for the stories that look at the release board in a real browser
# (Playwright drives it by its path: Playwright's own browser download is not used).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing the Debian package chromium"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

$(CLUSTER_BIN)/.built: $(CLUSTER_MODULE)/go.mod $(CLUSTER_MODULE)/go.sum $(wildcard $(CLUSTER_MODULE)/cmd/*/*.go)
	@command -v go >/dev/null 2>&1 || { echo "error: Go 1.26 is needed to build the control plane ($(CLUSTER_MODULE))" >&2; exit 1; }
	@echo "building kube-apiserver, kube-controller-manager $(K8S_VERSION), etcd, helm and kstatus into $(CLUSTER_BIN)"
	cd $(CLUSTER_MODULE) && GOTOOLCHAIN=local go build -trimpath -ldflags '$(GO_LDFLAGS)' -o $(CURDIR)/$(CLUSTER_BIN)/ \
	  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
	  ./cmd/etcd ./cmd/kstatus helm.sh/helm/v4/cmd/helm
	touch $@

$(GATEWAY_API_CRDS)/VERSION: $(CLUSTER_MODULE)/go.mod $(CLUSTER_MODULE)/go.sum
	@command -v go >/dev/null 2>&1 || { echo "error: Go 1.26 is needed to fetch the Gateway API CRDs ($(CLUSTER_MODULE))" >&2; exit 1; }
	cd $(CLUSTER_MODULE) && GOTOOLCHAIN=local go mod download sigs.k8s.io/gateway-api
	rm -rf $(GATEWAY_API_CRDS) && mkdir -p $(GATEWAY_API_CRDS)
	src="$$(cd $(CLUSTER_MODULE) && GOTOOLCHAIN=local go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/standard" && \
	  cp "$$src"/*.yaml $(GATEWAY_API_CRDS)/ && chmod u+w $(GATEWAY_API_CRDS)/*.yaml
	printf 'sigs.k8s.io/gateway-api %s standard\n' '$(GATEWAY_API_VERSION)' > $@

gateway-api-crds: $(GATEWAY_API_CRDS)/VERSION

# Traefik, a real Gateway API data plane, for the stories that route real requests. Built in its own module
# as the Go module proxy serves it (its go.mod and go.sum; a module's replace directives hold only there),
# into .cluster/bin/traefik-$(TRAEFIK_VERSION), which .cluster/bin/traefik links to. Part of `make test`;
# the file's name is its pin, so only a new TRAEFIK_VERSION builds it again (no other edit of this Makefile).
# Cold, it takes 17 minutes of CPU (9 to 26 minutes on 2 cores) and 5 GB of module and build cache. v3.7
# cannot be built from the proxy: its zip lacks the nested module github.com/traefik/traefik/dynamic/ext,
# which is not served, nor are several of its DNS providers' SDKs.
TRAEFIK_VERSION := v3.6.12
TRAEFIK_SRC     := .cluster/src/traefik-$(TRAEFIK_VERSION)
TRAEFIK_BIN     := $(CLUSTER_BIN)/traefik-$(TRAEFIK_VERSION)

$(TRAEFIK_BIN):
	@command -v go >/dev/null 2>&1 || { echo "error: Go 1.26 is needed to build Traefik" >&2; exit 1; }
	@echo "building traefik $(TRAEFIK_VERSION) into $(CLUSTER_BIN) (cold: 9 to 26 min on 2 cores)"
	rm -rf $(TRAEFIK_SRC) $(CLUSTER_BIN)/traefik-v* && mkdir -p $(dir $(TRAEFIK_SRC)) $(CLUSTER_BIN)
	src="$$(cd /tmp && GOTOOLCHAIN=local GOFLAGS=-mod=mod \
	  go mod download -json github.com/traefik/traefik/v3@$(TRAEFIK_VERSION) | \
	  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p')" && \
	  test -n "$$src" && cp -r "$$src" $(TRAEFIK_SRC) && chmod -R u+w $(TRAEFIK_SRC)
	cd $(TRAEFIK_SRC) && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -trimpath \
	  -ldflags '-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$(TRAEFIK_VERSION)' \
	  -o $(CURDIR)/$@ ./cmd/traefik

gateway-binaries: $(TRAEFIK_BIN)
	@ln -sf $(notdir $(TRAEFIK_BIN)) $(CLUSTER_BIN)/traefik

cluster-binaries: $(CLUSTER_BIN)/.built $(GATEWAY_API_CRDS)/VERSION

# A real control plane with the chart installed by helm and the operator running: prints a KUBECONFIG.
cluster: install cluster-binaries
	$(BIN)/python -m shepherd.lab.cluster --bin-dir $(CLUSTER_BIN) --chart charts/shepherd --workdir .cluster/run

demo: install prometheus
	$(BIN)/shepherd demo

lint: install
	$(BIN)/ruff check --no-cache operator tests bench
	$(BIN)/ruff format --no-cache --check operator tests bench

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q tests/unit

integration: install prometheus
	$(BIN)/pytest -q tests/integration

controlplane: install prometheus chromium cluster-binaries
	$(BIN)/pytest -q tests/controlplane

e2e: install
	$(BIN)/pytest -q tests/e2e

# Not tests/e2e: it needs a real cluster; .github/workflows/e2e.yaml runs it on kind (here: `make e2e`).
test: install prometheus chromium cluster-binaries gateway-binaries lint typecheck docs floors wheel-env
	$(BIN)/pytest -q -rs -p no:cacheprovider --ignore=tests/e2e tests

bench: install prometheus cluster-binaries
	$(BIN)/python bench/reconcile_cost.py
	$(BIN)/python bench/resync_cost.py
	$(BIN)/python bench/rollback_latency.py
	$(BIN)/python bench/slow_prometheus.py
	$(BIN)/python bench/scale.py --releases 1000 5000
	$(BIN)/python bench/gateway_latency.py
	$(BIN)/python bench/churn_soak.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/hang_recovery.py

# Every bench at its smoke size (seconds each), failing when one no longer measures; `make test` runs them
# as tests/bench.
bench-smoke: install prometheus cluster-binaries
	$(BIN)/python bench/reconcile_cost.py --smoke
	$(BIN)/python bench/resync_cost.py --smoke
	$(BIN)/python bench/rollback_latency.py --smoke
	$(BIN)/python bench/slow_prometheus.py --smoke
	$(BIN)/python bench/scale.py --smoke
	$(BIN)/python bench/gateway_latency.py --smoke
	$(BIN)/python bench/churn_soak.py --smoke
	$(BIN)/python bench/dashboard.py --smoke
	$(BIN)/python bench/hang_recovery.py --smoke

# The documentation site (mkdocs.yml) into site/; --strict turns every warning (a broken link, a missing page
# or snippet) into a failure. NO_MKDOCS_2_WARNING quiets a notice Material prints on every build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8000

# Rewrites the reference pages generated from the CRDs, the CLI, the metrics registry, the reasons and the
# chart's values schema; tests/unit/test_docsgen.py fails while one is stale.
docs-reference: install
	$(BIN)/python -m shepherd.docsgen

# The floors pyproject.toml declares, proven: .venv-floors has the package with its test extra and every
# direct dependency at its lowest allowed version (uv's lowest-direct resolution; tests/floors.py fails where
# the resolver had to take a later one), and there the linters and the unit tests must pass. Not mypy: at the
# libraries' floors it judges their annotations (click 8.1.0's are partial), not the code. Again when
# pyproject.toml changes.
FLOORS := .venv-floors

$(FLOORS)/.tested: pyproject.toml | $(STAMP)
	rm -rf $(FLOORS) && $(PYTHON) -m venv --without-pip $(FLOORS)
	$(BIN)/uv pip install --quiet --resolution lowest-direct --python $(FLOORS)/bin/python -e '.[test]'
	$(FLOORS)/bin/python tests/floors.py
	$(FLOORS)/bin/ruff check --no-cache operator tests bench
	$(FLOORS)/bin/ruff format --no-cache --check operator tests bench
	$(FLOORS)/bin/pytest -q -p no:cacheprovider tests/unit
	touch $@

# The package as the image installs it: its wheel alone, installed without extras into .venv-wheel, whose
# `shepherd` tests/controlplane/test_the_shipped_package_runs_a_release.py runs. Again when a file that goes
# into the wheel changes. Without build/, where modules since removed from the source would stay and ship.
WHEEL_ENV     := .venv-wheel
WHEEL_SOURCES := pyproject.toml README.md $(shell find operator/shepherd crds examples -type f -not -name '*.pyc')

$(WHEEL_ENV)/.installed: $(WHEEL_SOURCES)
	rm -rf $(WHEEL_ENV) build && $(PYTHON) -m venv $(WHEEL_ENV)
	$(WHEEL_ENV)/bin/pip wheel --quiet --no-deps --wheel-dir $(WHEEL_ENV)/dist .
	$(WHEEL_ENV)/bin/pip install --quiet $(WHEEL_ENV)/dist/release_shepherd-*.whl
	touch $@

.PHONY: floors wheel-env
floors: $(FLOORS)/.tested
wheel-env: $(WHEEL_ENV)/.installed

clean:
	rm -rf $(VENV) $(FLOORS) $(WHEEL_ENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .cluster
