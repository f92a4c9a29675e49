# tuwen: Chinese image-text retrieval service (CPU image).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TUWEN_HOME=/data/home
WORKDIR /srv/tuwen

# Pinned torch/torchvision first. Pass --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index>
# for CPU-only wheels (an image of ~2 GB instead of ~8 GB with the CUDA build).
ARG TORCH_INDEX_URL=""
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
COPY indexer ./indexer
COPY training ./training
COPY tuwen ./tuwen
RUN pip install .

VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["tuwen", "serve", "--host", "0.0.0.0", "--port", "8000"]
