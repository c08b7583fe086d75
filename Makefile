# smsgw: `make run` starts everything and shows messages reaching their final states;
# `make test` runs the whole suite against a real broker and real SMSCs.
SHELL := /bin/bash
TANSU_VERSION := 0.6.0
TANSU := $(shell command -v tansu 2>/dev/null || echo $(HOME)/.cargo/bin/tansu)
CARGO ?= cargo

.PHONY: kannel bench-tansu soak kannel-faults openssl routesim micro bench-pipeline bench-binds bench-peers-deps all deps tansu peers perl-smpp helm-test build run test analytics-test lint fmt bench clean

all: build

## Install what is missing: Tansu (the broker, ~15 min the first time) and the
## third-party SMPP peers (npm `smpp`, Perl Net::SMPP and Kannel from Debian, PyPI
## `smpplib`).
deps: tansu peers openssl

tansu:
	@if [ -x "$(TANSU)" ] && "$(TANSU)" --version 2>/dev/null | grep -q "$(TANSU_VERSION)"; then \
	  echo "tansu $(TANSU_VERSION) present"; \
	else \
	  echo "installing tansu $(TANSU_VERSION) (first build takes ~15 min)"; \
	  $(CARGO) install tansu --version $(TANSU_VERSION) --locked --features dynostore,libsql; \
	fi

peers: tests/peers/node_modules/smpp/package.json perl-smpp .venv-smpplib/bin/python kannel

## Kannel (Debian), an ESME binding to the SMPP server in its interop test.
kannel:
	@if [ -x /usr/sbin/bearerbox ] || [ -x /usr/bin/bearerbox ]; then echo "kannel present"; else \
	  echo "installing kannel"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y kannel || { $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y kannel; }; \
	fi

## PyPI smpplib, an ESME for the SMPP server's interop test.
.venv-smpplib/bin/python:
	python3 -m venv .venv-smpplib
	.venv-smpplib/bin/pip install --quiet smpplib==2.2.4

## The smpps:// test makes its CA and certificates with the openssl command line.
openssl:
	@if command -v openssl >/dev/null; then echo "openssl present"; else \
	  echo "installing openssl"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y openssl || { $$SUDO apt-get update && $$SUDO apt-get install -y openssl; }; \
	fi

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
	$(CARGO) build -p smsgw-admin -p smsgw-smpp-server
	ADMIN_BIN=target/debug/smsgw-admin .venv-helm/bin/python tests/helm/test_chart.py
	.venv-helm/bin/python tests/deploy/test_deploy_kit.py

## The soak with faults (issue 15, docs/reliability.md): 100,000 messages at 150/s on sqlite
## storage, kill -9 of a random service every 20-40 s, the broker killed twice, carrier
## links cut under load, a throttling storm, poison on every topic; then the ledger check
## (0 lost, 0 contradicted, 0 unflagged duplicates). SMSGW_SOAK_MESSAGES, _SEED, _PACE_US.
## The short form (soak_short, 1,500 messages) runs in make test.
soak: tansu
	$(CARGO) build --release --workspace --bins
	$(CARGO) test --release -p smsgw-e2e --test faults soak_long -- --ignored --nocapture

## Kannel under the same faults, in the same ledger (docs/reliability.md): the soak's
## load through smsbox while bearerbox (file store) is killed with SIGKILL every 20-40 s.
## KANNEL_FAULTS_MESSAGES (30,000), _PACE_US (6,667), _SEED. Exits non-zero on a loss.
kannel-faults: bench-peers-deps
	$(CARGO) build --release -p smsgw-bench --bin smsgw-bench-peers
	RUST_LOG=error ./target/release/smsgw-bench-peers kannel-faults

analytics-test: .venv/bin/python
	.venv/bin/python tests/analytics/decode_event_log.py

## The comparison (docs/benchmarks.md): the routing simulation, the micro-benchmarks,
## then the whole gateway end to end (broker ceiling, throughput, latency, CPU and
## memory per service), the same load through Kannel and Jasmin against the same SMPP
## simulator, and the side-by-side report (printed, bench-results/, docs/benchmarks.md).
bench: tansu bench-peers-deps routesim micro
	$(CARGO) build --release --workspace --bins
	RUST_LOG=error ./target/release/smsgw-bench-pipeline
	RUST_LOG=error BENCH_INSTANCES=2 ./target/release/smsgw-bench-pipeline
	RUST_LOG=error JASMIN_VENV=.venv-jasmin ./target/release/smsgw-bench-peers all
	./target/release/smsgw-bench-report

## submit_sm/s through one bind (window 1, 10, 100): the dispatcher alone on Tansu.
bench-binds:
	$(CARGO) build --release -p smsgw-bench
	@for w in 1 10 100; do BENCH_WINDOW=$$w RUST_LOG=error ./target/release/smsgw-bench | grep -v '^submit_sm\|^window' ; done

## The peers of the comparison: Kannel (Debian), RabbitMQ and Redis (Debian, for
## Jasmin), Jasmin 0.11.0 (PyPI; 0.11.1 loses its DLRs) in .venv-jasmin.
bench-peers-deps: .venv-jasmin/bin/jasmind.py
	@if [ -x /usr/sbin/bearerbox ] && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && command -v redis-server >/dev/null; then \
	  echo "kannel, rabbitmq-server, redis-server present"; else \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y kannel rabbitmq-server redis-server || { $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y kannel rabbitmq-server redis-server; }; \
	fi

.venv-jasmin/bin/jasmind.py:
	python3 -m venv .venv-jasmin
	.venv-jasmin/bin/pip install --quiet jasmin==0.11.0

## The whole gateway end to end only (BENCH_STORAGE=sqlite, BENCH_MESSAGES, BENCH_QUICK,
## BENCH_INSTANCES=2 for two instances of every service).
bench-pipeline: tansu
	$(CARGO) build --release --workspace --bins
	RUST_LOG=error ./target/release/smsgw-bench-pipeline

## Micro-benchmarks (criterion): router decision, Avro, SMPP PDUs, GSM-7.
## Tansu's sqlite engine reading back 30,000 records with and without the header index
## deploy/local/tansu-index.py adds (N=... for another count).
bench-tansu: tansu
	$(CARGO) test --release -p smsgw-testkit --test tansu_fetch_cost -- --ignored --nocapture

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
