#!/usr/bin/env bash
# Installs the Debian packages the test suite drives as real clients, when missing.
# Without root (or without apt) it says what is missing; the tests that need it then skip.
set -u
# Debian package -> the command it provides (isync ships mbsync).
declare -A wanted=([swaks]=swaks [isync]=mbsync [mutt]=mutt [curl]=curl)
missing=()
for package in swaks isync mutt curl; do
  command -v "${wanted[$package]}" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
    || echo "warning: could not install ${missing[*]}; the tests that drive them will be skipped"
else
  echo "note: ${missing[*]} not installed (run as root to install); the tests that drive them will be skipped"
fi
exit 0
