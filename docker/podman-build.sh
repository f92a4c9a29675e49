#!/bin/sh
# Build the project's image with podman on the Debian base of docker/podman-base.sh, then run the
# demo in it (generate, ingest, train tiny, index, export) without serving.
#   docker/podman-build.sh                 # wheels from PyPI
#   WHEELS="/opt/pypi /opt/pypi-more" docker/podman-build.sh
#                                          # local PEP 503 mirrors (folders with simple/), mounted read-only
set -eu
cd "$(dirname "$0")/.."
BASE=${BASE_IMAGE:-localhost/tuwen-base:bookworm}
IMAGE=${IMAGE:-localhost/tuwen:latest}
set --
INDEXES=""
for dir in ${WHEELS:-}; do
    set -- "$@" --volume "$dir:$dir:ro"
    INDEXES="$INDEXES file://$dir/simple"
done
podman build --network host "$@" \
    --build-arg BASE_IMAGE="$BASE" \
    --build-arg PIP_EXTRA_INDEX_URL="${INDEXES# }" \
    ${EXTRAS:+--build-arg EXTRAS="$EXTRAS"} \
    -t "$IMAGE" .
podman run --rm --network none -e HF_HUB_OFFLINE=1 "$IMAGE" tuwen demo --no-serve
