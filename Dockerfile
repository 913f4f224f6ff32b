# syntax=docker/dockerfile:1
# venzory-db-exporter: the image. Build: docker build -t venzory-db-exporter .
#
# Mount at run time (docker-compose.yml does):
#   /etc/venzory-db-exporter/   the config (venzory.yaml; the shipped one is the default)
#   /srv/venzory/prisma/        the application's prisma/ folder: migrations/ and schema.prisma
#                               (point PRISMA_MIGRATIONS_DIR and PRISMA_SCHEMA at them)
# and pass DATABASE_URL, SHADOW_DATABASE_URL, EVENTS_TOKEN, SENTRY_DSN in the environment.
#
# Reproducible: the base is pinned to a Debian release (bookworm) and Python 3.11; the Python
# packages come from the hash-checked requirements/runtime.lock (scripts/lock regenerates it),
# the package itself is built by the locked setuptools. To pin the base to a digest too, see
# docs/monitoring.md, "Image". Docker format keeps the HEALTHCHECK (buildah/podman: --format docker).
ARG BASE=python:3.11-slim-bookworm

# -- build: install the package and its dependencies into a virtualenv ----------------------
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/runtime.lock requirements/
RUN pip install --require-hashes --no-deps -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-deps --no-build-isolation .

# -- run: the virtualenv only, as an unprivileged user -------------------------------------
FROM ${BASE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_DISABLE_CREATED_SERIES=True
RUN groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid exporter --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin exporter
COPY --from=build /opt/venv /opt/venv
COPY config/venzory.yaml /etc/venzory-db-exporter/venzory.yaml
USER 10001:10001
EXPOSE 19187
# No curl in slim images: python's urllib. /healthz answers 200 while the process lives.
# (With `run --listen` on another port, override the healthcheck too.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:19187/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["venzory-db-exporter"]
CMD ["run", "--config", "/etc/venzory-db-exporter/venzory.yaml"]
