# seqserve: serves the model store over KServe V2 REST (8000) and gRPC (8001).
# CPU image by default; for the CUDA execution provider build with
#   --build-arg BASE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04 --build-arg EXTRA=gpu
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG EXTRA=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    SEQSERVE_STORE=/models SEQSERVE_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-compile ".${EXTRA:+[$EXTRA]}" \
    && useradd --system --uid 10001 seqserve
COPY model_store /models

USER 10001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready').status != 200)"
ENTRYPOINT ["seqserve", "serve"]
