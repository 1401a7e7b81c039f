# Sourced by the bench/*device*.sh scripts: the environment that builds
# against the libraries carried in .devdeps (made by
# shared/device/prepare-deps.sh, beside the sources; the device machine has
# no package registry). Only the carried .pc files are searched:
# libmicrohttpd.pc names gnutls as a private requirement, which no code here
# links against, so a stub satisfies pkg-config (and -Wl,--as-needed keeps
# unused libraries off the executables).
deps=$PWD/.devdeps
mkdir -p "$deps/stubpc"
printf 'Name: gnutls\nDescription: stub for the device build\nVersion: 3.8.0\nLibs:\nCflags:\n' >"$deps/stubpc/gnutls.pc"
export PKG_CONFIG_SYSROOT_DIR=$deps PKG_CONFIG_LIBDIR=$deps/usr/lib/x86_64-linux-gnu/pkgconfig:$deps/stubpc
export CPATH=$deps/usr/include LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
