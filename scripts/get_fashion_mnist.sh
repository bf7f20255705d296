#!/bin/sh
# Make Fashion-MNIST available offline: Debian/Ubuntu's dataset-fashion-mnist package
# (/usr/share/datasets/fashion-mnist) unless a copy is already there or in Keras's cache.
set -e
for d in /usr/share/datasets/fashion-mnist "$HOME/.keras/datasets/fashion-mnist"; do
  if [ -f "$d/train-images-idx3-ubyte.gz" ] && [ -f "$d/t10k-labels-idx1-ubyte.gz" ]; then exit 0; fi
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Fashion-MNIST not found and apt-get is not available: put the four .gz files in ~/.keras/datasets/fashion-mnist/ (or set data.path)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Fashion-MNIST (apt package dataset-fashion-mnist)"
$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || {
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; }
