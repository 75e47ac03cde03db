#!/bin/sh
# debian-root.sh DIR: a small Debian root filesystem made offline from this
# machine's own installed packages (there is no network and no package
# cache here, so no debootstrap): the files of the packages below as dpkg
# lists them, and a dpkg status database that names exactly those
# packages, so dpkg, dpkg-deb and dpkg-query work in it as in a Debian
# image. Fails when the machine is not Debian-based (no dpkg-query).
set -eu
dir=$1
pkgs="base-files dash coreutils dpkg tar diffutils sed grep findutils
libc6 libc-bin libselinux1 libpcre2-8-0 libacl1 libattr1 zlib1g liblzma5
libbz2-1.0 libzstd1 libmd0 libgmp10 libcrypt1 libgcc-s1"
mkdir -p "$dir"
# usrmerge: /bin, /sbin and /lib as the symlinks into /usr this system has,
# made first so that the packages' files land in /usr through them.
for l in bin sbin lib lib64; do
    if [ -L "/$l" ]; then
        mkdir -p "$dir/usr/$l"
        ln -sfn "$(readlink "/$l")" "$dir/$l"
    fi
done
installed=""
for p in $pkgs; do
    # A package that is not installed here is left out of the root and
    # of its status database alike.
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || continue
    installed="$installed $p"
    dpkg-query -L "$p" | while read -r f; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        if [ -d "$f" ] && [ ! -L "$f" ]; then
            mkdir -p "$dir$f"
        else
            mkdir -p "$dir$(dirname "$f")"
            cp -a "$f" "$dir$f"
        fi
    done
done
ln -sf dash "$dir/usr/bin/sh"
mkdir -p "$dir/var/lib/dpkg/info" "$dir/var/lib/dpkg/updates" "$dir/var/lib/dpkg/triggers" "$dir/tmp" "$dir/root" "$dir/etc"
: > "$dir/var/lib/dpkg/available"
: > "$dir/var/lib/dpkg/diversions"
for p in $installed; do
    dpkg-query -s "$p"
    echo
    dpkg-query -L "$p" > "$dir/var/lib/dpkg/info/$(dpkg-query -W -f='${binary:Package}' "$p").list"
done > "$dir/var/lib/dpkg/status"
echo 'root:x:0:0:root:/root:/bin/sh' > "$dir/etc/passwd"
echo 'root:x:0:' > "$dir/etc/group"
chmod 1777 "$dir/tmp"
