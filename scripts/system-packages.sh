#!/usr/bin/env bash
# The Debian packages the test suite uses for real, in one place for `make test`
# and `.ci/run`. Installs the missing ones when it can (root, or sudo without a
# password, and apt-get present); otherwise says once what is missing and which
# tests will be skipped, and exits 0 so the rest of the suite still runs.
set -uo pipefail

# package -> the tests that need it
declare -A needed_by=(
    [orthanc]="PACS round trips (batch over DICOMweb, SR push, serve's Orthanc test)"
    [orthanc-dicomweb]="PACS round trips over DICOMweb"
    [dcmtk]="storescu/findscu listener and PACS tests"
    [dicom3tools]="dciodvfy validation of every SR/SC written"
    [chromium]="the web page test (headless Chromium)"
    [chromium-driver]="the web page test (Selenium's chromedriver)"
    [xvfb]="the napari tests (an X display for Qt's OpenGL)"
    [npm]="the OHIF viewer test and make viewer (fetch @ohif/app once into .cache/ohif)"
)
packages=(orthanc orthanc-dicomweb dcmtk dicom3tools chromium chromium-driver xvfb)

missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# npm may come with another nodejs build than Debian's (which ships it separately).
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ "${#missing[@]}" -eq 0 ] && exit 0

as_root=""
can_install=yes
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root="sudo -n"
    else
        can_install=no
    fi
fi
command -v apt-get >/dev/null 2>&1 || can_install=no

if [ "$can_install" = yes ]; then
    echo "Installing the Debian packages the tests use: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if $as_root apt-get update -qq \
        && $as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        # Debian starts an Orthanc service on install; tests start their own on free ports.
        $as_root service orthanc stop >/dev/null 2>&1 || true
        exit 0
    fi
    echo "apt-get failed; the tests below will be skipped."
fi

echo "Missing Debian packages (install them with: sudo apt-get install ${missing[*]}):"
for package in "${missing[@]}"; do
    echo "  - $package: ${needed_by[$package]} will be skipped"
done
exit 0
