#!/bin/sh
# Extract OpenCV's sample photographs (examples/data, 22 MB) from Debian's opencv-doc package without installing it:
# the package is 274 MB installed, and only its sample images are used, as extra ID scenes of the `photos` benchmark
# protocol. Runs apt-get download (a package registry, like any install step); the library itself never downloads.
#
#   sh scripts/fetch_opencv_samples.sh [DEST]
#
# DEST defaults to $DISCOPATCH_OPENCV_SAMPLES, else ${XDG_DATA_HOME:-$HOME/.local/share}/discopatch/opencv-samples,
# which is where discopatch.benchmark.datasets looks (next to /usr/share/doc/opencv-doc/examples/data).
set -eu
dest=${1:-${DISCOPATCH_OPENCV_SAMPLES:-${XDG_DATA_HOME:-$HOME/.local/share}/discopatch/opencv-samples}}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chown _apt "$tmp" 2>/dev/null || true  # apt downloads as its _apt user where it can (no unsandboxed warning)
(cd "$tmp" && apt-get download -q opencv-doc >/dev/null)
data=./usr/share/doc/opencv-doc/examples/data
dpkg-deb --fsys-tarfile "$tmp"/opencv-doc_*.deb | tar -x -C "$tmp" "$data" ./usr/share/doc/opencv-doc/copyright
mkdir -p "$dest"
cp -R "$tmp/$data/." "$dest/"
cp "$tmp/usr/share/doc/opencv-doc/copyright" "$dest/COPYRIGHT.opencv-doc"
dpkg-deb -f "$tmp"/opencv-doc_*.deb Version >"$dest/VERSION.opencv-doc"
echo "OpenCV sample data in $dest"
