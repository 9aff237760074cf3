# Benchmarks (not part of `make test` or CI): quality.md's figures against real processes.
#   make bench         release build, every scenario, table + bench-results/{results.json,*.png}
#   make bench-quick   small sizes, ~30 s: checks the suite itself works
#   make bench BENCH_ARGS="--scenario propagation"   one scenario (repeat --scenario for more)
# Needs nats-server (installed on demand by tools-nats) and, for chart text, a TrueType font
# (fonts-dejavu-core; or BENCH_FONT=/path/to/font.ttf; BENCH_FONT=none draws without text).
# BENCH_PERF=<dir> attaches `perf record -g` to every rollcall node (perf-<node>-<pid>.data).

BENCH_ARGS ?=
BENCH_OUT ?= bench-results

.PHONY: bench bench-quick bench-build

bench-build:
	$(CARGO) build --release -p rollcall -p rollcall-bench

bench: tools-nats bench-build
	ROLLCALL_BIN=$(CURDIR)/target/release/rollcall ./target/release/rollcall-bench --out $(BENCH_OUT) $(BENCH_ARGS)

bench-quick: tools-nats bench-build
	ROLLCALL_BIN=$(CURDIR)/target/release/rollcall ./target/release/rollcall-bench --quick --out $(BENCH_OUT) $(BENCH_ARGS)
