#!/bin/sh
# Build the project's image with podman on the Debian base of docker/podman-base.sh, then run the
# demo in it (generate, ingest, train tiny, index, export) without serving.
#   docker/podman-build.sh                 # wheels from PyPI
#   WHEELS="/opt/pypi /opt/pypi-more" docker/podman-build.sh
#                                          # local PEP 503 mirrors (folders with simple/) first,
#                                          # mounted read-only; PyPI only for what they lack
#                                          # (OFFLINE=1: no PyPI at all)
#   CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt ...   # pip trusts this CA bundle (a proxy's)
#   FIND_LINKS=/opt/pypi-more/files ...    # a folder of prebuilt wheels (lmdb): no compiler needed
#   ISOLATION=chroot docker/podman-build.sh   # where the OCI runtime cannot start containers
#                                          # (README, "Containers": what happened on the dev VM)
set -eu
cd "$(dirname "$0")/.."
BASE=${BASE_IMAGE:-localhost/tuwen-base:bookworm}
IMAGE=${IMAGE:-localhost/tuwen:latest}
DEMO_ARGS=${DEMO_ARGS:---no-serve}  # e.g. "--no-serve --epochs 1" for a quicker check
set --
INDEXES=""
for dir in ${WHEELS:-}; do
    set -- "$@" --volume "$dir:$dir:ro"
    INDEXES="$INDEXES file://$dir/simple"
done
if [ -n "$INDEXES" ]; then  # the first mirror replaces PyPI, the others are extra indexes
    FIRST=${INDEXES# }; FIRST=${FIRST%% *}
    REST=${INDEXES# }; REST=${REST#"$FIRST"}; REST=${REST# }
    [ -n "${OFFLINE:-}" ] || REST="$REST https://pypi.org/simple"
    set -- "$@" --build-arg PIP_INDEX_URL="$FIRST" --build-arg PIP_EXTRA_INDEX_URL="$REST"
fi
[ -n "${EXTRAS:-}" ] && set -- "$@" --build-arg EXTRAS="$EXTRAS"
if [ -n "${FIND_LINKS:-}" ]; then  # a folder of wheels built beforehand (lmdb for cn_clip): no compiler
    set -- "$@" --volume "$FIND_LINKS:$FIND_LINKS:ro" --build-arg PIP_FIND_LINKS="$FIND_LINKS" --build-arg BUILD_DEPS=
else  # Debian's python3 keeps Python.h in python3-dev (the python:3.11-slim base has it already)
    set -- "$@" --build-arg BUILD_DEPS="gcc libc6-dev patch python3-dev"
fi
if [ -n "${CA_BUNDLE:-}" ]; then  # a TLS-intercepting proxy's CA (e.g. /etc/ssl/certs/ca-certificates.crt)
    set -- "$@" --volume "$CA_BUNDLE:/run/tuwen-ca.crt:ro" --build-arg PIP_CERT=/run/tuwen-ca.crt
fi
podman build --isolation "${ISOLATION:-oci}" --network host "$@" --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" .
if [ "${ISOLATION:-oci}" = chroot ]; then
    # no OCI runtime here: run the demo as a build step on top of the image, in the same isolation
    printf 'FROM %s\nRUN HF_HUB_OFFLINE=1 tuwen demo %s\n' "$IMAGE" "$DEMO_ARGS" |
        podman build --isolation chroot -t localhost/tuwen-demo-check -f - .
else
    podman run --rm --network none -e HF_HUB_OFFLINE=1 "$IMAGE" tuwen demo $DEMO_ARGS
fi
