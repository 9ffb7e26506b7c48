# The controller image (config/manager/deployment.yaml): `docker build -t <registry>/provenant:<tag> .`
# Build stage: the release binary. Runtime: distroless with glibc, non-root (UID 65532, as the
# Deployment's securityContext expects), nothing but the binary.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# .git is not copied (.dockerignore): pass the commit for provenant_build_info, e.g.
# `docker build --build-arg PROVENANT_COMMIT=$(git rev-parse HEAD) .` (else "unknown").
ARG PROVENANT_COMMIT=
RUN cargo build --release --locked --bin provenant

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/provenant /usr/local/bin/provenant
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/provenant"]
CMD ["controller"]
