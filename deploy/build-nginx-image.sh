#!/usr/bin/env bash
# Builds the image `vassal-nginx:latest` for deploy/compose-nginx.yaml: Debian's nginx with a
# Vassal agent as PID 1 that keeps nginx's upstream in step with the web nodes (template mode),
# pulling nothing from any registry. The image is `FROM scratch` plus files of this machine:
#
#   - nginx (the Debian package: scripts/setup installs it) and the shared libraries it links;
#   - dash as /bin/sh, which runs the template's reload command;
#   - deploy/nginx/nginx.conf and deploy/templates/nginx-upstream.conf.j2;
#   - the static vassal that deploy/build-image.sh --binary-only puts in deploy/image/.
#
#   deploy/build-image.sh --binary-only && deploy/build-nginx-image.sh [--tag NAME:TAG]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag="vassal-nginx:latest"
while (($#)); do
    case $1 in
    --tag) tag=${2:?--tag needs NAME:TAG}; shift 2 ;;
    --tag=*) tag=${1#--tag=}; shift ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-nginx-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
vassal=$root/deploy/image/vassal
[[ -x $vassal ]] || { echo "build-nginx-image.sh: $vassal missing: run deploy/build-image.sh --binary-only" >&2; exit 1; }
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $nginx ]] || { echo "build-nginx-image.sh: nginx not found: run scripts/setup" >&2; exit 1; }
command -v docker >/dev/null || { echo "build-nginx-image.sh: docker not found" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
rootfs=$ctx/rootfs
# A binary at `dest` in the image, and every library ldd lists for it at the same path.
add() {
    local bin=$1 dest=$2 lib
    install -D -m 0755 "$bin" "$rootfs$dest"
    for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        [[ -e $rootfs$lib ]] || install -D -m 0755 "$lib" "$rootfs$lib"
    done
}
add "$nginx" /usr/sbin/nginx
add "$(readlink -f /bin/sh)" /bin/sh
install -D -m 0755 "$vassal" "$rootfs/vassal"
install -D -m 0644 "$root/deploy/nginx/nginx.conf" "$rootfs/etc/nginx/nginx.conf"
install -D -m 0644 "$root/deploy/templates/nginx-upstream.conf.j2" \
    "$rootfs/etc/vassal/nginx-upstream.conf.j2"
install -d -m 1777 "$rootfs/tmp"
cp "$root/deploy/nginx/Dockerfile" "$ctx/"
docker build --pull=false --tag "$tag" "$ctx"
echo "build-nginx-image.sh: image $tag is $(docker image inspect --format '{{.Size}}' "$tag") bytes"
