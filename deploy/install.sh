#!/usr/bin/env bash
# Installs the Vassal agent as a systemd service on any Linux host:
#   /usr/local/bin/vassal, /etc/systemd/system/vassal.service, /etc/vassal/vassal.env
#
#   deploy/install.sh --binary target/release/vassal --role web
#   deploy/install.sh --url https://…/vassal --sha256 HEX --role lb --lb-addr 192.168.1.10
#   deploy/install.sh --binary ./vassal --flags "-node=n1 -join=192.168.1.10"
#
# Options:
#   --binary PATH    the vassal binary to install (a static build from deploy/build-image.sh
#                    runs on any x86_64 Linux; target/release/vassal needs glibc 2.34 or later)
#   --url URL        download the binary instead (curl or wget), e.g. a release asset
#   --sha256 HEX     refuse a binary whose SHA-256 differs
#   --role lb|web    write vassal.env from deploy/systemd/ROLE.env (the demo's roles)
#   --lb-addr ADDR   the load balancer's address in that file (default 10.0.0.5)
#   --flags FLAGS    write vassal.env with these agent flags instead of a role's
#   --root DIR       install under DIR instead of / (packaging, tests); implies --no-start
#   --no-start       do not enable and (re)start the service
#
# An existing /etc/vassal/vassal.env is kept unless --role or --flags is given. Re-running the
# script upgrades the binary and restarts the agent (which leaves and rejoins the cluster).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

binary='' url='' sha256='' role='' lb_addr=10.0.0.5 flags='' root='' start=true have_flags=false
while (($#)); do
    case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --url) url=${2:?--url needs a URL}; shift 2 ;;
    --sha256) sha256=${2:?--sha256 needs a hex digest}; shift 2 ;;
    --role) role=${2:?--role needs lb or web}; shift 2 ;;
    --lb-addr) lb_addr=${2:?--lb-addr needs an address}; shift 2 ;;
    --flags) flags=${2?--flags needs a value}; have_flags=true; shift 2 ;;
    --root) root=${2:?--root needs a directory}; start=false; shift 2 ;;
    --no-start) start=false; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done

[[ -n $binary || -n $url ]] || die "say which binary to install: --binary PATH or --url URL"
[[ -n $binary && -n $url ]] && die "give --binary or --url, not both"
[[ -n $role && $have_flags == true ]] && die "give --role or --flags, not both"
case $role in '' | lb | web) ;; *) die "unknown role '$role' (lb or web)" ;; esac
[[ -z $root && $(id -u) != 0 ]] && die "run as root (or pass --root DIR to install elsewhere)"
root=${root%/}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -n $url ]]; then
    if command -v curl >/dev/null; then
        curl -fsSL --retry 5 -o "$tmp/vassal" "$url" || die "download of $url failed"
    elif command -v wget >/dev/null; then
        wget -q -O "$tmp/vassal" "$url" || die "download of $url failed"
    else
        die "neither curl nor wget is installed; download the binary and pass --binary"
    fi
    binary=$tmp/vassal
fi
[[ -f $binary ]] || die "no binary at $binary (build one: cargo build --release -p vassal)"
if [[ -n $sha256 ]]; then
    got=$(sha256sum "$binary" | cut -d' ' -f1)
    [[ $got == "$sha256" ]] || die "SHA-256 of $binary is $got, expected $sha256"
fi
# Catch a binary for another architecture or libc before systemd does.
"$binary" agent -h >/dev/null 2>&1 || die "$binary does not run on this host (try the static build)"

install -D -m 0755 "$binary" "$root/usr/local/bin/vassal"
install -D -m 0644 "$here/systemd/vassal.service" "$root/etc/systemd/system/vassal.service"
env_file=$root/etc/vassal/vassal.env
mkdir -p "$root/etc/vassal"
if [[ -n $role ]]; then
    sed "/^VASSAL_FLAGS=/s/10\.0\.0\.5/$lb_addr/g" "$here/systemd/$role.env" >"$env_file"
elif $have_flags; then
    printf '# Written by deploy/install.sh.\nVASSAL_FLAGS=%s\n' "$flags" >"$env_file"
elif [[ ! -f $env_file ]]; then
    printf '# Agent flags, e.g. -node=NAME -join=ADDR -tag role=web (vassal agent -h).\nVASSAL_FLAGS=\n' >"$env_file"
fi
chmod 0644 "$env_file"
echo "install.sh: installed $root/usr/local/bin/vassal, $root/etc/systemd/system/vassal.service"
echo "install.sh: flags in $env_file: $(grep '^VASSAL_FLAGS=' "$env_file" | cut -d= -f2-)"

if $start; then
    command -v systemctl >/dev/null || die "systemctl not found; start the agent yourself: vassal agent …"
    systemctl daemon-reload
    systemctl enable vassal.service
    systemctl restart vassal.service
    systemctl --no-pager --lines=5 status vassal.service || true
fi
