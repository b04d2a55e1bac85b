# The holdgate worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY holdgate ./holdgate
COPY stream ./stream
COPY models ./models
COPY policies ./policies
RUN pip install --no-cache-dir . && useradd --system holdgate && mkdir -p /var/lib/holdgate \
    && chown holdgate /var/lib/holdgate
USER holdgate
ENTRYPOINT []
CMD ["holdgate", "worker"]
