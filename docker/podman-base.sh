#!/bin/sh
# A base image made from Debian packages only (no container registry needed): debootstrap a
# minimal bookworm with Python 3.11, import it into podman as localhost/tuwen-base:bookworm.
# Usage (root): docker/podman-base.sh [MIRROR]     then: docker/podman-build.sh
set -eu
MIRROR=${1:-http://deb.debian.org/debian}
IMAGE=${BASE_IMAGE:-localhost/tuwen-base:bookworm}
ROOTFS=$(mktemp -d /var/tmp/tuwen-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,libgomp1 \
    bookworm "$ROOTFS" "$MIRROR"
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
tar -C "$ROOTFS" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$IMAGE"
podman image ls "$IMAGE"
