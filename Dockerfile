# keyward: one image for the operator and the verifier sidecar.
# Build: docker build -t keyward:dev .
FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/keyset.rs \
    && cargo build --release --locked --bin keyward \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
# Make sure cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin keyward

# distroless/cc: glibc and libgcc only, no shell; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/keyward /usr/local/bin/keyward
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/keyward"]
CMD ["--help"]
