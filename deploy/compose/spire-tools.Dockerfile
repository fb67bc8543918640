# Image for the one-shot spire-register service of docker-compose.yml: the spire-server CLI of the
# same SPIRE release plus a POSIX shell (the SPIRE images are built FROM scratch and have none).
ARG SPIRE_VERSION=1.15.3
FROM ghcr.io/spiffe/spire-server:${SPIRE_VERSION} AS spire-server

FROM alpine:3.22
COPY --from=spire-server /opt/spire/bin/spire-server /usr/local/bin/spire-server
COPY --chmod=0755 register.sh /usr/local/bin/spire-register
# Owned by the spire-server uid: a fresh named volume mounted here copies this ownership and mode.
RUN install -d -o 1000 -g 1000 -m 0750 /bootstrap
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/spire-register"]
