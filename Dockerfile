# The uplink image: one image, one process per container, the verb chosen by the command
# (`ingress`, `archive`, `media`, `router`, `topics`). See docker-compose.yml.
# PYTHON_IMAGE: where python:3.11-slim cannot be pulled, scripts/image-check builds on a Debian
# stand-in (the same Python 3.11 on bookworm); deployments keep the default.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY uplink uplink
COPY ingress ingress
COPY consumers consumers
COPY schemas schemas
# Installed into a virtualenv that the runtime stage copies whole: none of the source tree, the
# build's caches or its compiler (for the C extensions, setup.py) ends up in the image (and no
# BuildKit-only syntax is needed).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/uplink && /opt/uplink/bin/pip install .

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/uplink/bin:$PATH
COPY --from=build /opt/uplink /opt/uplink
# A fixed uid, so files on the archive and media volumes keep one owner across rebuilds.
# The data directories exist in the image, owned by that user: a new named volume mounted on
# them takes their owner, so the workers can write without running as root.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/uplink --no-create-home uplink \
 && mkdir -p /var/lib/uplink/archive /var/lib/uplink/media /etc/uplink \
 && chown -R uplink:uplink /var/lib/uplink
USER uplink
WORKDIR /var/lib/uplink
EXPOSE 8080
ENTRYPOINT ["uplink"]
CMD ["ingress", "--host", "0.0.0.0", "--port", "8080"]
