# Multi-stage build of the `rookery` binary.
#   docker build -t rookery .
# The image runs `rookery serve` on 0.0.0.0:8080 (chat) and 0.0.0.0:9090 (console); configure it
# with ROOKERY_* environment variables (see the README).

FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p rookery-node \
 && cp target/release/rookery /rookery

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /data --create-home rookery \
 && mkdir /blobs && chown rookery /blobs
COPY --from=build /rookery /usr/local/bin/rookery
USER rookery
WORKDIR /data
ENV ROOKERY_LISTEN=0.0.0.0:8080 \
    ROOKERY_ADMIN_LISTEN=0.0.0.0:9090 \
    ROOKERY_DATA_DIR=/data \
    ROOKERY_LOG_FORMAT=json
EXPOSE 8080 9090
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD curl -fs http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["rookery"]
CMD ["serve"]
