# rbd-relay: the two set-up commands of the README are `make demo` and `make test`.
# Both install what they need first (Debian packages, as root) and tear down what they start.
.PHONY: deps build demo test unit faults env-up env-down clippy fmt bench fresh-check test-matrix librbd-check

CARGO ?= cargo

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

demo: deps
	./scripts/demo.sh

test: deps
	./scripts/test.sh

unit:
	$(CARGO) test --workspace --lib --bins

# The Ceph fault matrix alone (docs/reliability.md), against the pair `testenv env` points
# to (started when none runs): it kills and stops rbd-mirror, pauses OSDs and fills a pool of
# its own, bringing each back. `make test` runs it too.
faults: deps
	$(CARGO) run -q -p testenv -- up
	$(CARGO) test -p rbd-relay --test faults_real -- --test-threads 1 --nocapture

env-up: deps
	$(CARGO) run -q -p testenv -- up --openstack

env-down:
	$(CARGO) run -q -p testenv -- down

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Benchmark on the local pair: writes target/bench-report.md (SIZE_MIB=1024 by default; a
# list such as SIZE_MIB=1024,2048 measures each size; BENCH_ARGS passes more, e.g.
# BENCH_ARGS='--idle-for 1 --runbook')
bench: deps
	$(CARGO) run --release -q -p testenv -- up
	$(CARGO) run --release -q -p bench -- --size-mib $${SIZE_MIB:-1024} $(BENCH_ARGS)

# The README's two commands (make demo, make test) on a fresh Debian 12 chroot with the project
# copied in: proves a first run installs what it needs. Needs root; stop a running env first.
fresh-check:
	./scripts/fresh-check.sh

# Cross-version real tests: site-a on the host's Ceph 16.2 (Pacific), site-b on Reef (Debian 13
# chroot) then Tentacle (Debian unstable chroot); migrates a volume in both modes into each.
# Each pair runs in private mount+network namespaces (a running env is not touched); the
# chroots are built once from the host's Debian archive and cached in MATRIX_DIR
# (default /var/tmp/rbd-relay-matrix). RELEASES="reef" runs one. See docs/compatibility.md.
test-matrix: deps
	./scripts/test-matrix.sh $(RELEASES)

# rbd-relay built and unit-tested against librbd 18 (RELEASE=reef, default) or 20
# (RELEASE=tentacle) inside a copy of testenv's chroot; also checks that every function
# librbd-sys declares is exported there. Needs root; the host's toolchain and crates are used.
librbd-check:
	./scripts/librbd-check.sh $(RELEASE)
