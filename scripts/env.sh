# Sourced by the scripts: shared locations. Expensive, deterministic outputs live outside the
# clone, keyed by their inputs, so repeated runs are fast.
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export KENNEL_CACHE=${KENNEL_CACHE:-/var/cache/kennel}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KENNEL_CACHE/target}
mkdir -p "$KENNEL_CACHE"
