#!/usr/bin/env bash
# Installs the Debian packages listed in system-packages.txt that are missing: with apt-get as
# root (or through passwordless sudo). Elsewhere it lists what is missing and which tests will
# skip; with CI=true a missing package is an error, since CI must run every test.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
list="$here/system-packages.txt"

missing=()
declare -A needed_by
while read -r package purpose; do
  [[ -z "$package" || "$package" == \#* ]] && continue
  needed_by[$package]="$purpose"
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done <"$list"

[[ ${#missing[@]} -eq 0 ]] && exit 0

if command -v apt-get >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    sudo=(none)
  fi
  if [[ "${sudo[0]:-}" != none ]]; then
    echo "system-deps: installing ${missing[*]}"
    if "${sudo[@]}" apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        "${missing[@]}" >/dev/null; then
      exit 0
    fi
    echo "system-deps: apt-get could not install ${missing[*]}" >&2
    exit 1
  fi
fi

echo "system-deps: missing Debian packages (install them as root: apt-get install ${missing[*]}):" >&2
for package in "${missing[@]}"; do
  echo "  $package - ${needed_by[$package]}; those tests will be skipped" >&2
done
if [[ -n "${CI:-}" ]]; then
  echo "system-deps: CI must run every test" >&2
  exit 1
fi
