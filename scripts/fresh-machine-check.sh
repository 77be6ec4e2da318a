#!/usr/bin/env bash
# What a newcomer meets: makes a clean Debian 12 root from Debian's packages (mmdebstrap), puts a plain `git clone`
# of this repository in it, WITHOUT ../shared beside it, and runs exactly the README's two commands there
# (bash scripts/demo.sh, then bash scripts/test.sh), failing on any error. Prints each command's wall time and the
# CTest summary. A script for people, not part of .ci/run: it installs ~300 packages and builds everything (an hour
# or more on 2 cores). Needs root (mmdebstrap, chroot, mounts); installs mmdebstrap when it is missing.
#
# Usage: sudo bash scripts/fresh-machine-check.sh [--ref REF] [--work DIR] [--keep] [--trust-ca CERT.crt]
#   --ref REF        what to clone (default: HEAD of this checkout; uncommitted changes are not part of a clone)
#   --work DIR       where the root and the logs go (default: a new folder under /var/tmp)
#   --keep           keep the root afterwards (several GB), e.g. to look inside with chroot
#   --trust-ca CERT  a CA certificate the root must trust, only for networks that intercept TLS (a proxy of your own);
#                    a real fresh machine has no such thing, so by default none is added
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

ref=HEAD work="" keep=0 trust_ca=""
while (($#)); do
  case $1 in
    --ref) ref=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --trust-ca) trust_ca=$2; shift 2 ;;
    *) echo "fresh-machine-check: unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "fresh-machine-check: needs root (mmdebstrap, chroot, mounts): sudo bash $0" >&2; exit 2; }
[ -z "$trust_ca" ] || [ -f "$trust_ca" ] || { echo "fresh-machine-check: $trust_ca: no such file" >&2; exit 2; }
commit=$(git rev-parse --verify "$ref^{commit}")
work=${work:-$(mktemp -d /var/tmp/sqasam-fresh-XXXXXX)}
mkdir -p "$work/logs"
root=$work/root
logs=$work/logs

if ! command -v mmdebstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R "${mounted[i]}" 2>/dev/null || umount -lR "${mounted[i]}" || true; done
  if grep -q " $root/" /proc/mounts; then
    echo "fresh-machine-check: something is still mounted under $root; not deleting it" >&2
  elif [ "$keep" = 0 ]; then
    rm -rf "$root"
  fi
}
trap cleanup EXIT

elapsed() { local s=$1; printf '%d:%02d:%02d' $((s / 3600)) $((s / 60 % 60)) $((s % 60)); }

# Debian 12 as its installer sets it up: the release, its updates and security updates; apt and nothing else.
echo "fresh-machine-check: Debian 12 root in $root (commit ${commit:0:12}), logs in $logs"
start=$SECONDS
mmdebstrap --variant=apt --quiet bookworm "$root" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" >"$logs/mmdebstrap.log" 2>&1 \
  || { tail -n 30 "$logs/mmdebstrap.log"; echo "fresh-machine-check: mmdebstrap failed" >&2; exit 1; }
root_time=$((SECONDS - start))

if [ -n "$trust_ca" ]; then
  mkdir -p "$root/usr/local/share/ca-certificates" "$root/etc/ssl/certs"
  cp "$trust_ca" "$root/usr/local/share/ca-certificates/fresh-machine-check.crt"  # kept by update-ca-certificates
  cat "$trust_ca" >>"$root/etc/ssl/certs/ca-certificates.crt"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"

# A plain clone, as anyone cloning the repository gets it: no build outputs, no .venv, no ../shared.
git clone --quiet --no-hardlinks "$repo" "$root/root/sqasam"
git -C "$root/root/sqasam" checkout --quiet --detach "$commit"
[ ! -e "$root/root/shared" ] || { echo "fresh-machine-check: $root/root/shared exists" >&2; exit 1; }

mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount -t sysfs sysfs "$root/sys" && mounted+=("$root/sys")
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev" && mounted+=("$root/dev")

# Each README command in the root, as a login with nothing set up; its output goes to a log.
run_in_root() {
  local name=$1 command=$2 status=0
  local start=$SECONDS
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM=dumb /bin/bash -c "cd /root/sqasam && $command" >"$logs/$name.log" 2>&1 || status=$?
  eval "${name}_time=$((SECONDS - start)) ${name}_status=$status"
}

run_in_root demo "bash scripts/demo.sh"
run_in_root test "bash scripts/test.sh"

echo
echo "fresh-machine-check: commit ${commit:0:12} on a clean Debian 12 root, no ../shared"
echo "  root (mmdebstrap)         $(elapsed "$root_time")"
echo "  bash scripts/demo.sh      $(elapsed "$demo_time")  exit $demo_status"
echo "  bash scripts/test.sh      $(elapsed "$test_time")  exit $test_status"
echo
echo "CTest summary (full output: $logs/test.log):"
grep -E "tests passed|tests failed|Total Test time" "$logs/test.log" || echo "  (no CTest summary: the build or the setup failed)"
skipped=$(grep -c "\*\*\*Skipped" "$logs/test.log" || true)
echo "$skipped tests skipped:"
grep -E "\*\*\*Skipped" "$logs/test.log" | sed 's/^ */  /' || true
if grep -q "The following tests" "$logs/test.log"; then sed -n '/The following tests/,$p' "$logs/test.log"; fi
if [ "$demo_status" != 0 ]; then echo; echo "demo.sh failed; its last lines:"; tail -n 30 "$logs/demo.log"; fi
if [ "$test_status" != 0 ] && ! grep -q "tests passed" "$logs/test.log"; then
  echo; echo "test.sh failed; its last lines:"; tail -n 30 "$logs/test.log"
fi
[ "$demo_status" = 0 ] && [ "$test_status" = 0 ] || { echo "fresh-machine-check: FAILED" >&2; exit 1; }
echo "fresh-machine-check: both README commands passed"
