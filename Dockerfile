# syntax=docker/dockerfile:1
# spiffe-broker image: token service (`serve`), sidecar (`sidecar`), demo API and CLI in one image.
# Build: docker build -t spiffe-broker:0.1.0 .
# Python 3.13: the newest version CI runs the suite on (.ci/run); 3.11 and 3.12 are supported too.
ARG PYTHON_IMAGE=python:3.13-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# .dockerignore admits only the package sources and metadata.
COPY . .
RUN pip install . && pip check

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="spiffe-broker" \
      org.opencontainers.image.description="SPIFFE SVIDs in, short-lived certificate-bound OAuth tokens out" \
      org.opencontainers.image.licenses="Apache-2.0"
# uid/gid 10001, no home, no login shell. /var/lib/spiffe-broker is the token service's state directory
# (the KEK; the SQLite store unless a PostgreSQL URL is set). /run/broker holds the sidecar's token
# socket; 1777 so that a fresh volume mounted there (docker-compose.yml) lets the sidecar's uid create
# its socket. A fresh volume copies these modes.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin broker \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/spiffe-broker \
    && install -d -m 1777 /run/broker
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SPIFFE_BROKER_STATE_DIR=/var/lib/spiffe-broker
USER 10001:10001
ENTRYPOINT ["spiffe-broker"]
CMD ["--help"]
