# syntax=docker/dockerfile:1
#
# The rollcall image: one static-ish binary (glibc) on distroless, running as non-root 65532.
#   docker build -t rollcall:0.1.0 .
#   docker run --rm -p 8000:8000 rollcall:0.1.0 serve
# The same image runs the server (`rollcall serve`), the operator (`rollcall operator`) and
# the tools (`rollcall crd`, `rollcall gentoken`, `rollcall checkconfig`).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

############################################################
# planner: the workspace manifests with stub sources, so that the dependency layer below is
# rebuilt only when a Cargo.toml or Cargo.lock changes, not on every source edit.
############################################################
FROM ${RUST_IMAGE} AS planner
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
# Keep every Cargo.toml; replace each crate root (lib, main, bins, build script, benches,
# tests, examples, and targets with an explicit `path = "*.rs"`) with a stub; drop the rest.
RUN set -eu; \
    mkdir -p /recipe; \
    cp Cargo.toml Cargo.lock /recipe/; \
    find crates tests -name Cargo.toml -not -path '*/target/*' | while read -r manifest; do \
      dir="$(dirname "$manifest")"; \
      mkdir -p "/recipe/$dir"; \
      cp "$manifest" "/recipe/$dir/"; \
      explicit="$(sed -nE 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"([^"]+[.]rs)".*/\1/p' "$manifest")"; \
      for root in "$dir"/src/lib.rs "$dir"/src/main.rs "$dir"/build.rs "$dir"/src/bin/*.rs \
                  "$dir"/benches/*.rs "$dir"/tests/*.rs "$dir"/examples/*.rs \
                  $(for p in $explicit; do echo "$dir/$p"; done); do \
        [ -f "$root" ] || continue; \
        mkdir -p "/recipe/$(dirname "$root")"; \
        case "$root" in \
          */src/lib.rs) : > "/recipe/$root" ;; \
          *) echo 'fn main() {}' > "/recipe/$root" ;; \
        esac; \
      done; \
    done

############################################################
# builder: dependencies first (cached layer), then the workspace.
############################################################
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY --from=planner /recipe ./
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked -p rollcall
# Replace the stubs by the real sources. COPY keeps the context's modification times, which
# can be older than the stub build: touch the sources so cargo rebuilds the workspace crates.
RUN rm -rf crates tests
COPY crates crates
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    find crates tests -type f -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p rollcall \
    && install -D -m 0755 target/release/rollcall /out/rollcall

############################################################
# runtime: distroless (glibc, CA certificates, no shell), user nonroot (65532).
############################################################
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="rollcall" \
      org.opencontainers.image.description="Kubernetes-native presence server speaking Centrifugo's protocols" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/rollcall /usr/local/bin/rollcall
USER 65532:65532
WORKDIR /home/nonroot
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/rollcall"]
CMD ["serve"]
