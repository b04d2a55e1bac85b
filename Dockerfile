# The holdgate image of docker-compose.yml: the worker, the CLI and the one-shot key
# generator (docker/init-keys.sh). Build context: the repo root (see .dockerignore).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY holdgate ./holdgate
COPY stream ./stream
COPY models ./models
COPY policies ./policies
RUN pip install /src && rm -rf /src

# A fixed uid, so that the volumes keep their owner across rebuilds. Every folder a
# named volume is mounted on exists here, owned by holdgate: an empty volume takes the
# folder's owner and mode when first mounted, so nothing needs root at run time.
#   /var/lib/holdgate  the worker's state (HOLDGATE_DATADIR: RocksDB, marks)
#   /keys/worker       the worker's private key (mode 700: only the worker reads it)
#   /keys/admin        operator and approver private keys (the `cli` service)
#   /keys/public       public keys, for whoever verifies
COPY docker/init-keys.sh /usr/local/bin/holdgate-init-keys
RUN chmod 755 /usr/local/bin/holdgate-init-keys \
    && useradd --system --uid 10001 --user-group --no-create-home \
       --home-dir /var/lib/holdgate holdgate \
    && install -d -o holdgate -g holdgate -m 700 /var/lib/holdgate /keys/worker /keys/admin \
    && install -d -o holdgate -g holdgate -m 755 /keys /keys/public

USER holdgate
WORKDIR /var/lib/holdgate
ENV HOLDGATE_DATADIR=/var/lib/holdgate
ENTRYPOINT ["holdgate"]
CMD ["worker"]
