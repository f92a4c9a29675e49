# tuwen: Chinese image-text retrieval service (CPU image).
#
#   docker build -t tuwen .                                   # from python:3.11-slim
#   docker/podman-build.sh                                    # no registry: a Debian base made with
#                                                             # debootstrap (docker/podman-base.sh)
# Any base with Python 3.10+ and its venv module works (BASE_IMAGE); everything goes into /opt/venv,
# so a Debian python3 (PEP 668, externally managed) is fine too.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH TUWEN_HOME=/data/home
RUN python3 -m venv /opt/venv
WORKDIR /srv/tuwen

# Pinned torch/torchvision first. Pass --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index>
# for CPU-only wheels (PyPI's torch is the CUDA build: the image measured 6.3 GB with it).
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL: local wheel mirrors (e.g. mounted with `podman build -v`).
ARG TORCH_INDEX_URL=""
# (declared without a value: unset in the environment unless given)
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY common ./common
COPY models ./models
COPY indexer ./indexer
COPY app ./app
COPY training ./training
COPY analysis ./analysis
COPY tuwen ./tuwen
# EXTRAS=ray also installs Ray Data, for images used as Ray workers (`tuwen index --ray`).
# cn_clip pins lmdb 1.3.0, which has no wheel for Python 3.11: it is compiled, with BUILD_DEPS
# installed for that and removed after (BUILD_DEPS="" when PIP_FIND_LINKS holds a built wheel).
ARG EXTRAS=""
ARG PIP_FIND_LINKS
ARG BUILD_DEPS="gcc libc6-dev patch"
RUN if [ -n "$BUILD_DEPS" ]; then apt-get update && apt-get install -y --no-install-recommends $BUILD_DEPS; fi \
    && pip install ".${EXTRAS:+[$EXTRAS]}" \
    && if [ -n "$BUILD_DEPS" ]; then apt-get purge -y --auto-remove $BUILD_DEPS && rm -rf /var/lib/apt/lists/*; fi
# numba compiles UMAP's kernels into its disk cache (in site-packages) once, at build time
RUN python -c 'from analysis.clusters import compile_umap_kernels; compile_umap_kernels()'

VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["tuwen", "serve", "--host", "0.0.0.0", "--port", "8000"]
