# smsgw: `make run` starts everything and shows messages reaching their final states;
# `make test` runs the whole suite against a real broker and real SMSCs.
SHELL := /bin/bash
TANSU_VERSION := 0.6.0
TANSU := $(shell command -v tansu 2>/dev/null || echo $(HOME)/.cargo/bin/tansu)
CARGO ?= cargo

.PHONY: routesim micro bench-pipeline all deps tansu peers perl-smpp helm-test build run test analytics-test lint fmt bench clean

all: build

## Install what is missing: Tansu (the broker, ~15 min the first time) and the two
## third-party SMPP peers (npm `smpp`, Perl Net::SMPP from Debian).
deps: tansu peers

tansu:
	@if [ -x "$(TANSU)" ] && "$(TANSU)" --version 2>/dev/null | grep -q "$(TANSU_VERSION)"; then \
	  echo "tansu $(TANSU_VERSION) present"; \
	else \
	  echo "installing tansu $(TANSU_VERSION) (first build takes ~15 min)"; \
	  $(CARGO) install tansu --version $(TANSU_VERSION) --locked --features dynostore,libsql; \
	fi

peers: tests/peers/node_modules/smpp/package.json perl-smpp

perl-smpp:
	@if perl -MNet::SMPP -e1 2>/dev/null; then echo "Net::SMPP present"; else \
	  echo "installing libnet-smpp-perl"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y libnet-smpp-perl || { $$SUDO apt-get update && $$SUDO apt-get install -y libnet-smpp-perl; }; \
	fi

tests/peers/node_modules/smpp/package.json: tests/peers/package.json tests/peers/package-lock.json
	cd tests/peers && npm ci --no-audit --no-fund
	@touch $@

build:
	$(CARGO) build --release --workspace --bins

## Start Tansu, the five services and the simulated carrier; send the demo; Ctrl-C stops.
run: tansu build
	./deploy/local/run.sh

## Unit, integration (real Tansu) and end-to-end (real SMSCs) tests, plus lints, plus the
## analytics check: a third-party Avro library decodes the event log from the .avsc files.
test: deps lint analytics-test helm-test
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

.venv/bin/python:
	python3 -m venv .venv
	.venv/bin/pip install --quiet fastavro==1.13.1

## The Helm chart: linted and rendered with Helm's Go SDK (helm-python-sdk), manifests
## validated with kubernetes-validate, every rendered config loaded by smsgw-admin.
.venv-helm/bin/python:
	python3 -m venv .venv-helm
	.venv-helm/bin/pip install --quiet helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.3

helm-test: .venv-helm/bin/python
	$(CARGO) build -p smsgw-admin
	ADMIN_BIN=target/debug/smsgw-admin .venv-helm/bin/python tests/helm/test_chart.py
	.venv-helm/bin/python tests/deploy/test_deploy_kit.py

analytics-test: .venv/bin/python
	.venv/bin/python tests/analytics/decode_event_log.py

## Measured throughput (see docs/benchmarks.md); release build, results in bench-results/.
bench: tansu routesim micro
	$(CARGO) build --release -p smsgw-bench
	@for w in 1 10 100; do BENCH_WINDOW=$$w RUST_LOG=error ./target/release/smsgw-bench | grep -v '^submit_sm\|^window' ; done

## The whole gateway end to end (broker, five services as release processes, simulator).
## Not part of `make bench` yet: its latency phase stalls (docs/benchmarks.md).
bench-pipeline: tansu
	$(CARGO) build --release --workspace --bins
	RUST_LOG=error ./target/release/smsgw-bench-pipeline

## Micro-benchmarks (criterion): router decision, Avro, SMPP PDUs, GSM-7.
micro:
	$(CARGO) bench -p smsgw-bench --bench micro -- --warm-up-time 1 --measurement-time 3

## Routing simulation (pure, seconds): smsgw's scorer vs an oracle and round-robin.
routesim:
	$(CARGO) build --release -p smsgw-routesim
	@mkdir -p target/bench
	./target/release/smsgw-routesim --seed 7 --json target/bench/routesim-seed7.json
	./target/release/smsgw-routesim --seed 11 --json target/bench/routesim-seed11.json

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf .data
