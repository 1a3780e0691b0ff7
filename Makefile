# The two commands: `make demo` and `make test`. Everything else is a step of those.
#
#   make deps    install what is missing (nats-server, curl, the wasm32-wasip2 Rust target)
#   make build   build every binary of the workspace
#   make test    the whole test suite (cargo-nextest when installed, else cargo test)
#   make lint    rustfmt and clippy, warnings as errors
#   make demo    build, then run scripts/demo.sh
#   make bench   benchmarks (scripts/bench.sh)
#   make clean   remove build output
#
# Extra arguments for the test runner: make test TEST_ARGS='-- some_filter'

CARGO ?= cargo
TEST_ARGS ?=

.DEFAULT_GOAL := build
.PHONY: deps build test lint demo bench clean

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins

# The binaries are built first: one suite runs the real `lattice` and `lattice-host`.
# The suite runs twice: against the distribution's nats-server, then against the current one
# that `make deps` unpacks under target/tools (LATTICE_NATS_SERVER chooses the server).
NATS_CURRENT := $(CURDIR)/target/tools/nats-server-current

# An error a test returns is told without a backtrace (a panic still has one when RUST_BACKTRACE
# asks), so that the reason is not lost in a shortened log.
test: export RUST_LIB_BACKTRACE = 0
test: deps build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "+ $(CARGO) nextest run --workspace $(TEST_ARGS)   # the distribution's nats-server"; \
		$(CARGO) nextest run --workspace $(TEST_ARGS) && \
		if [ -x "$(NATS_CURRENT)" ]; then \
			echo "+ LATTICE_NATS_SERVER=$(NATS_CURRENT) $(CARGO) nextest run --workspace $(TEST_ARGS)   # $$($(NATS_CURRENT) --version)"; \
			LATTICE_NATS_SERVER=$(NATS_CURRENT) $(CARGO) nextest run --workspace $(TEST_ARGS); \
		fi && \
		echo "+ $(CARGO) test --doc --workspace" && \
		$(CARGO) test --doc --workspace; \
	else \
		echo "+ $(CARGO) test --workspace $(TEST_ARGS) (cargo-nextest not installed)"; \
		$(CARGO) test --workspace $(TEST_ARGS) && \
		if [ -x "$(NATS_CURRENT)" ]; then \
			LATTICE_NATS_SERVER=$(NATS_CURRENT) $(CARGO) test --workspace $(TEST_ARGS); \
		fi; \
	fi

# Clippy builds tests/build.rs, which builds the example components: it needs deps too.
lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) fmt --all --check --manifest-path examples/Cargo.toml
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: deps build
	bash scripts/demo.sh

bench: deps
	@if [ -x scripts/bench.sh ]; then \
		./scripts/bench.sh; \
	elif [ -f scripts/bench.sh ]; then \
		bash scripts/bench.sh; \
	else \
		echo "no benchmarks yet (scripts/bench.sh does not exist)"; \
	fi

clean:
	$(CARGO) clean
	$(CARGO) clean --manifest-path examples/Cargo.toml
