#!/usr/bin/env bash
# End-to-end suite: the examples' pods run in real containers with podman.
#
#   bash tests/e2e/run.sh          (make e2e; needs root and `.ci/e2e-setup --yes` done once)
#
# 1. builds the Python base image from Debian packages with debootstrap (cached: skipped
#    when the image exists; E2E_REBUILD_BASE=1 forces it),
# 2. builds the project image from the Dockerfile on top of it, with dist/kubexit.pyz
#    (KUBEXIT_PYZ=path uses another pyz),
# 3. runs tests/e2e/test_examples.py, which plays each example's pod with `podman kube play`.
# Every pod, volume and image tag made by this run is removed at the end, also on failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

BASE_IMAGE=${E2E_BASE_IMAGE:-localhost/kubexit-e2e-base:bookworm}
PYZ=${KUBEXIT_PYZ:-dist/kubexit.pyz}
PYTHON=${E2E_PYTHON:-/usr/bin/python3}
RUN_ID=kxe2e-$$
PROJECT_IMAGE=localhost/kubexit-e2e:$RUN_ID
CONTAINER_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORK=
CHILD=

say() { printf 'e2e: %s\n' "$*"; }
fail() { printf 'e2e: %s\n' "$*" >&2; exit 1; }
seconds_since() { echo $(( $(date +%s) - $1 )); }

if [ "$(id -u)" != 0 ]; then
    fail "must run as root (rootful podman, debootstrap)"
fi
# Under CI as root this installs and configures what is missing; elsewhere it only says what
# is missing (and fails) unless it was run with --yes beforehand.
if ! .ci/e2e-setup; then
    fail "this machine is not set up for the e2e suite: run '.ci/e2e-setup --yes' as root (see above)"
fi
for tool in podman debootstrap; do
    command -v "$tool" >/dev/null || fail "$tool is missing: run '.ci/e2e-setup --yes' as root"
done
[ -f "$PYZ" ] || fail "$PYZ not found: run 'make build' first (or set KUBEXIT_PYZ)"

# Runs a command in its own process group and waits for it: bash defers traps while a
# foreground command runs, so this is what lets an interrupt stop it (and what it started,
# podman calls included) at once; the EXIT trap then removes whatever the run had made.
run_child() {
    setsid "$@" &
    CHILD=$!
    local status=0
    wait "$CHILD" || status=$?
    CHILD=
    return $status
}

stop_child() {
    [ -z "$CHILD" ] || { kill -TERM -- "-$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; }
}

cleanup() {
    local status=$?
    set +e
    stop_child
    local pods volumes
    pods=$(podman pod ls --quiet --filter "label=kubexit-e2e=$RUN_ID")
    [ -z "$pods" ] || podman pod rm --force --time 0 $pods >/dev/null
    volumes=$(podman volume ls --quiet --filter "label=kubexit-e2e=$RUN_ID")
    [ -z "$volumes" ] || podman volume rm --force $volumes >/dev/null
    podman image exists "$PROJECT_IMAGE" && podman rmi "$PROJECT_IMAGE" >/dev/null
    if [ -n "$WORK" ]; then
        # debootstrap mounts /proc and /sys in the rootfs; never delete through a mount.
        awk -v work="$WORK/" 'index($2, work) == 1 {print $2}' /proc/mounts | sort -r \
            | xargs -r umount --lazy
        rm -rf --one-file-system "$WORK"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK=$(mktemp -d /var/tmp/kubexit-e2e.XXXXXX)
started=$(date +%s)

# The Debian mirror apt already uses (these machines reach no other), unless DEBIAN_MIRROR says.
debian_mirror() {
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\)[[:space:]]\+bookworm[[:space:]].*/\2/p' \
        | tr ' ' '\n' | grep -E '/debian/?$' | head -n 1)
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base_image() {
    local mirror rootfs t0 previous
    mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
    rootfs=$WORK/rootfs
    t0=$(date +%s)
    say "building $BASE_IMAGE: debootstrap bookworm (minbase, python3) from $mirror"
    if ! run_child debootstrap --variant=minbase --include=python3-minimal,libpython3.11-stdlib \
            bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 20 "$WORK/debootstrap.log" >&2
        fail "debootstrap failed (log above)"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    previous=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
    tar -C "$rootfs" -c . | podman import --change "ENV PATH=$CONTAINER_PATH" - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    # The image this one replaced, now untagged, unless something still uses it.
    [ -z "$previous" ] || podman rmi "$previous" >/dev/null 2>&1 || true
    say "built $BASE_IMAGE in $(seconds_since "$t0")s"
}

if [ "${E2E_REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
    build_base_image
else
    say "using cached $BASE_IMAGE (E2E_REBUILD_BASE=1 rebuilds it)"
fi

t0=$(date +%s)
mkdir -p "$WORK/context/dist"
cp Dockerfile "$WORK/context/Dockerfile"
cp "$PYZ" "$WORK/context/dist/kubexit.pyz"
if ! run_child podman build --quiet --build-arg "BASE=$BASE_IMAGE" --tag "$PROJECT_IMAGE" \
        "$WORK/context" >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    fail "podman build failed"
fi
say "built $PROJECT_IMAGE from the Dockerfile in $(seconds_since "$t0")s"

t0=$(date +%s)
status=0
# From the scratch directory: conmon writes a file named "oom" into podman's working
# directory when a container is OOM-killed.
cd "$WORK"
E2E_RUN_ID=$RUN_ID E2E_PROJECT_IMAGE=$PROJECT_IMAGE E2E_BASE_IMAGE=$BASE_IMAGE \
    run_child "$PYTHON" -m unittest discover --start-directory "$ROOT/tests/e2e" \
    --pattern 'test_*.py' --verbose || status=$?
cd "$ROOT"
say "pods ran in $(seconds_since "$t0")s; whole run $(seconds_since "$started")s"
exit $status
