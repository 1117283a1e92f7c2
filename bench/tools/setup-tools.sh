#!/usr/bin/env bash
# Installs the peers the bench compares against, pinned, from the package registries:
#   Ansible from Debian's packages (apt), pyinfra from PyPI (pip, in a venv under bench/.work/).
# Idempotent: does nothing when the pinned versions are already there. Needs root (apt-get).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${BENCH_WORK:-$(cd "$here/.." && pwd)/.work}
mkdir -p "$work"

ANSIBLE_VERSION=7.7.0+dfsg-3+deb12u1       # Debian bookworm: ansible 7.7 (collections) ...
ANSIBLE_CORE_VERSION=2.14.18-0+deb12u2     # ... on ansible-core 2.14
PYINFRA_VERSION=3.10.0                     # PyPI; its dependencies are pinned in requirements-pyinfra.txt

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# GNU time (for the peak RSS of single-process runs) and the ansible packages.
command -v /usr/bin/time >/dev/null || apt_install time=1.9-0.2
have_core=$(dpkg-query -W -f '${Version}' ansible-core 2>/dev/null || true)
have_ansible=$(dpkg-query -W -f '${Version}' ansible 2>/dev/null || true)
if [ "$have_core" != "$ANSIBLE_CORE_VERSION" ] || [ "$have_ansible" != "$ANSIBLE_VERSION" ]; then
  echo "bench: installing ansible $ANSIBLE_VERSION (ansible-core $ANSIBLE_CORE_VERSION) from Debian" >&2
  apt_install "ansible=$ANSIBLE_VERSION" "ansible-core=$ANSIBLE_CORE_VERSION"
fi

venv="$work/pyinfra-venv"
python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
command -v debootstrap >/dev/null || apt_install debootstrap # for the base image, when it is missing
if ! "$venv/bin/pyinfra" --version 2>/dev/null | grep -q "$PYINFRA_VERSION"; then
  echo "bench: installing pyinfra $PYINFRA_VERSION from PyPI into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements-pyinfra.txt"
fi

# Packages baked into the bench target image (python3-apt for Ansible's apt module; cron as the service),
# fetched as .debs from Debian's archive on the controller, so the image build needs no network.
debs="$work/image-debs"
mkdir -p "$debs"
want="python3-apt=2.6.0 python-apt-common=2.6.0 distro-info-data=0.58+deb12u7 cron=3.0pl1-162 cron-daemon-common=3.0pl1-162"
missing=0
for p in $want; do ls "$debs/${p%%=*}_"*.deb >/dev/null 2>&1 || missing=1; done
if [ "$missing" = 1 ]; then
  [ "$apt_updated" = 1 ] || { apt-get update -qq; apt_updated=1; }
  (cd "$debs" && apt-get download -q $want >/dev/null)
fi
echo "bench: tools ready: $(ansible-playbook --version 2>/dev/null | sed -n 1p), pyinfra $("$venv/bin/pyinfra" --version 2>&1 | tr -d '\n')" >&2
