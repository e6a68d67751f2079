# seqserve: serves the model store over KServe V2 REST (8000) and gRPC (8001).
#
#   docker build -t seqserve:cpu .                      # the default target: CPU
#   docker build --target cuda -t seqserve:cuda .       # CUDA 13 + cuDNN 9, onnxruntime-gpu
#
# Both run as an unprivileged user and write nothing outside /tmp and the store volume, so they
# run with a read-only root file system (docker run --read-only --tmpfs /tmp; the Kubernetes
# manifests in deploy/ do so). The example models are baked in at /models, the store volume: mount
# your own store there. tests/deploy/test_packaging.py keeps the install step below in line with
# the README's (`make serve`: pip install of the project, its dependencies from pyproject.toml).

# ---- CUDA: the CUDA runtime image with its own Python, onnxruntime-gpu in place of onnxruntime ----
FROM nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04 AS cuda
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/seqserve/bin:$PATH SEQSERVE_STORE=/models SEQSERVE_HOST=0.0.0.0 SEQSERVE_DEVICE=cuda
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home seqserve
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN python3 -m venv /opt/seqserve \
    && pip install --no-compile . \
    && pip uninstall -y onnxruntime \
    && pip install --no-compile "$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"][0])')" \
    && rm -rf /src
COPY --chown=10001:10001 model_store /models
WORKDIR /
USER 10001
VOLUME /models
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2)"]
ENTRYPOINT ["seqserve", "serve"]

# ---- CPU (default): the official slim Python image ----
FROM python:3.11-slim AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/seqserve/bin:$PATH SEQSERVE_STORE=/models SEQSERVE_HOST=0.0.0.0 SEQSERVE_DEVICE=cpu
RUN useradd --system --uid 10001 --no-create-home seqserve
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN python3 -m venv /opt/seqserve \
    && pip install --no-compile . \
    && rm -rf /src
COPY --chown=10001:10001 model_store /models
WORKDIR /
USER 10001
VOLUME /models
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2)"]
ENTRYPOINT ["seqserve", "serve"]
