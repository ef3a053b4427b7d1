# Build with the same command as CI; run from distroless cc (glibc, CA certificates) as a
# non-root numeric user, with nothing but the binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo reads every target of the manifest, so the test, bench and example sources come too.
COPY tests ./tests
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin ecr-preflight

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ecr-preflight /usr/local/bin/ecr-preflight
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/ecr-preflight"]
CMD ["serve"]
