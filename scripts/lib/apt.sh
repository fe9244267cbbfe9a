# shellcheck shell=bash
# Installing from Debian's archive, for the project's scripts (sourced, not run).
#
# Correct by construction: apt's package lists are refreshed before the first install of a process and
# after every change this project makes to apt's sources, never assumed current. A new Debian image has
# no lists at all, and a source entry apt has not fetched yet is invisible to it; both used to be hidden
# by a machine that had run the scripts before.
#
#   apt_require PACKAGE...            installs the packages that are not installed yet
#   apt_write_source NAME TEXT        writes /etc/apt/sources.list.d/NAME, then refreshes the lists
#   apt_remove_source NAME            removes it (the lists are refreshed before the next install)
#   apt_forget_lists                  empties /var/lib/apt/lists, as a new Debian image has it
#   apt_installed PACKAGE             status 0 when the package is installed

apt_lists_current=0
export DEBIAN_FRONTEND=noninteractive

apt_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "apt: not root and no sudo: cannot run $*" >&2
        return 1
    fi
}

apt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

apt_update() {
    echo "apt: apt-get update" >&2
    apt_as_root apt-get update -q >&2 || {
        echo "apt: apt-get update failed (is Debian's archive reachable?)" >&2
        return 1
    }
    apt_lists_current=1
}

apt_require() {
    local missing=() package
    for package in "$@"; do
        apt_installed "$package" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "apt: installing ${missing[*]}" >&2
    if [ "$apt_lists_current" -ne 1 ]; then
        apt_update || return 1
    fi
    apt_as_root apt-get install -y -q "${missing[@]}" >&2 || {
        echo "apt: apt-get install ${missing[*]} failed" >&2
        return 1
    }
}

apt_write_source() {
    local name=$1 text=$2
    printf '%s\n' "$text" | apt_as_root tee "/etc/apt/sources.list.d/$name" >/dev/null || return 1
    apt_lists_current=0
    apt_update
}

apt_remove_source() {
    local file="/etc/apt/sources.list.d/$1"
    if [ -e "$file" ]; then
        echo "apt: removing $file" >&2
        apt_as_root rm -f "$file" || return 1
    fi
    apt_lists_current=0
}

apt_forget_lists() {
    echo "apt: emptying /var/lib/apt/lists (as on a new Debian image)" >&2
    apt_as_root find /var/lib/apt/lists -mindepth 1 -maxdepth 1 ! -name lock ! -name partial -exec rm -rf {} + || return 1
    apt_lists_current=0
}
