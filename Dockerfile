# sami-gateway service image (CPU). Models live on the /models volume, jobs and their files on /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    SAMI_HOST=0.0.0.0 SAMI_PORT=8080 SAMI_MODEL_DIR=/models SAMI_DATA_DIR=/data

WORKDIR /app
# The CPU build of torch first, so the project's requirements keep it; everything else at the
# versions in constraints.txt, which CI tested.
COPY constraints.txt ./
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY sami_gateway ./sami_gateway
COPY namespaces ./namespaces
COPY sdk/python ./sdk/python
# The native attention kernel is built here, into the cache the service reads it from
# ($XDG_CACHE_HOME/sami-gateway/native).
ENV XDG_CACHE_HOME=/var/cache/sami
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
    && pip install -c constraints.txt ./sdk/python . && useradd --system --uid 10001 --home-dir /app sami \
    && python -c "from namespaces.music_source_separate.engine import native; native.build('/var/cache/sami/sami-gateway/native')" \
    && mkdir -p /models /data && chown sami /models /data && chown -R sami /var/cache/sami

USER sami
VOLUME ["/models", "/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s \
    CMD python -c "import urllib.request,os;urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SAMI_PORT','8080'),timeout=2)"
CMD ["sami-gateway", "serve"]
