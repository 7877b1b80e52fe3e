# keyward: one image for the operator and the verifier sidecar.
# Build: docker build -t keyward:dev .
# The toolchain of rust-toolchain.toml (1.95.0).
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
# --no-default-features: no `demo` feature, so the image does not link the test kit
# (in-memory API, kube-fake-client); `keyward demo` and `fake-apiserver` are not in it.
RUN cargo build --release --locked --no-default-features --bin keyward

# distroless/cc: glibc and libgcc only, no shell; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/keyward /usr/local/bin/keyward
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/keyward"]
CMD ["--help"]
