# Shared by scripts/demo and scripts/test: programs the platform uses from the distribution.
# Usage: source scripts/_system.sh; need_packages COMMAND=PACKAGE ...
# A missing command is installed with apt-get when this runs as root on Debian or Ubuntu
# (after one `apt-get update` if the package lists are empty or stale); otherwise a line
# says what to install, and the caller's fallback applies.
need_packages() {
    local missing=() pair cmd
    for pair in "$@"; do
        cmd=${pair%%=*}
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${pair#*=}")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "not installed: ${missing[*]} (install them from your distribution)" >&2
        return 0
    fi
    echo "installing from the distribution: ${missing[*]}" >&2
    # RUNLEVEL=1: on a host without systemd, the packages' init scripts start no service.
    local env=(DEBIAN_FRONTEND=noninteractive RUNLEVEL=1)
    if ! env "${env[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        env "${env[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
            || echo "could not install ${missing[*]} with apt-get" >&2
    fi
}
