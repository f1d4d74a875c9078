#!/usr/bin/env bash
# Builds the container image `vassal:latest` from our own binary, pulling nothing:
#
#   1. a statically linked release build of `vassal` (glibc's crt-static; the musl target is
#      not needed), checked with ldd;
#   2. the binary copied into deploy/image/, the whole Docker build context;
#   3. `docker build --pull=false` of deploy/image/Dockerfile, which is `FROM scratch`.
#
#   deploy/build-image.sh                 # all three; prints the binary's and image's sizes
#   deploy/build-image.sh --tag NAME:TAG  # another image name
#   deploy/build-image.sh --binary-only   # steps 1 and 2 (then `docker-compose up --build`
#                                         # builds the image; scripts/test does this)
#
# The static binary lands in target/x86_64-unknown-linux-gnu/release/vassal, apart from the
# ordinary target/release/vassal, so neither build invalidates the other.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=vassal:latest
binary_only=false
while (($#)); do
    case $1 in
    --tag) tag=${2:?--tag needs NAME:TAG}; shift 2 ;;
    --tag=*) tag=${1#--tag=}; shift ;;
    --binary-only) binary_only=true; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

target=x86_64-unknown-linux-gnu
# RUSTFLAGS reaches only the target's crates when --target is given, not build scripts or
# proc macros, which must stay dynamic. A non-PIE executable (relocation-model=static, as Go
# links its own) has no start-up relocations: its read-only data stays shared page cache instead
# of ~250 KiB of private, relocated copies in every agent.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
    cargo build --manifest-path "$root/Cargo.toml" --release --locked --target "$target" -p vassal
bin="${CARGO_TARGET_DIR:-$root/target}/$target/release/vassal"

# `ldd` says "not a dynamic executable" for a static binary, or "statically linked" for a
# static-pie one (what rustc makes by default); anything listing libraries is a failure.
linkage=$(ldd "$bin" 2>&1 || true)
if ! grep -qE 'not a dynamic executable|statically linked' <<<"$linkage"; then
    echo "build-image.sh: $bin is not static; ldd says:" >&2
    echo "$linkage" >&2
    exit 1
fi

install -m 0755 "$bin" "$root/deploy/image/vassal"
echo "build-image.sh: static binary $(stat -c %s "$bin") bytes -> deploy/image/vassal"
$binary_only && exit 0

command -v docker >/dev/null || { echo "build-image.sh: docker not found; install Docker Engine" >&2; exit 1; }
docker build --pull=false --tag "$tag" "$root/deploy/image"
echo "build-image.sh: image $tag is $(docker image inspect --format '{{.Size}}' "$tag") bytes"
