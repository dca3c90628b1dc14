"""A PEP 517 build backend for the one-module anyfork distribution.

It uses only the standard library, so `pip install ./bindings/python`
works without network access (pip gives it an isolated environment with
nothing to download: pyproject.toml requires nothing). It builds a pure
wheel holding anyfork.py (and _anyfork_mp.py, its multiprocessing
context), and an sdist of this directory.

The wheel's anyfork.py records where libanyfork is installed, as
`pkg-config --variable=libdir anyfork` says at build time (so a
`make install PREFIX=...` with PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig is
found with no ANYFORK_LIB): its line `INSTALL_LIBDIR = None` becomes that
directory. No pkg-config, or no anyfork.pc, records nothing.
"""

import base64
import hashlib
import io
import os
import re
import subprocess
import tarfile
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("anyfork.py", "_anyfork_mp.py")
# The one that records where the library is installed.
MODULE = MODULES[0]
SDIST_FILES = ("pyproject.toml", "README.md") + MODULES + ("_build/wheel_backend.py",)


def _project():
    """name, version, description and requires-python from pyproject.toml."""
    with open(os.path.join(HERE, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    project = text.split("[project]", 1)[1]

    def field(key):
        m = re.search(r'^%s\s*=\s*"([^"]*)"' % re.escape(key), project, re.M)
        if m is None:
            raise ValueError("pyproject.toml: [project] has no %s" % key)
        return m.group(1)

    return {k: field(k) for k in ("name", "version", "description", "requires-python")}


def _metadata(p):
    return ("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: %s\n"
            "Requires-Python: %s\nLicense: MIT OR Apache-2.0\n"
            % (p["name"], p["version"], p["description"], p["requires-python"]))


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "%s,sha256=%s,%d" % (name, digest.decode(), len(data))


def _pkg_config_libdir():
    """libanyfork's directory from pkg-config, or None."""
    try:
        r = subprocess.run(["pkg-config", "--variable=libdir", "anyfork"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    d = r.stdout.decode("utf-8", "surrogateescape").strip()
    return d if r.returncode == 0 and os.path.isabs(d) else None


def _module_source():
    """anyfork.py, with the library directory pkg-config gives recorded."""
    with open(os.path.join(HERE, MODULE), "rb") as f:
        src = f.read()
    line = b"\nINSTALL_LIBDIR = None\n"
    if src.count(line) != 1:
        raise ValueError("%s: expected one line `INSTALL_LIBDIR = None`" % MODULE)
    libdir = _pkg_config_libdir()
    if libdir is None:
        return src
    return src.replace(line, ("\nINSTALL_LIBDIR = %r\n" % libdir).encode("utf-8", "surrogateescape"))


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    p = _project()
    dist_info = "%s-%s.dist-info" % (p["name"], p["version"])
    files = [(MODULE, _module_source())]
    for module in MODULES:
        if module != MODULE:
            with open(os.path.join(HERE, module), "rb") as f:
                files.append((module, f.read()))
    files.append((dist_info + "/METADATA", _metadata(p).encode()))
    files.append((dist_info + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: anyfork wheel_backend\n"
                  b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    record = [_record_line(n, d) for n, d in files] + [dist_info + "/RECORD,,"]
    files.append((dist_info + "/RECORD", ("\n".join(record) + "\n").encode()))
    name = "%s-%s-py3-none-any.whl" % (p["name"], p["version"])
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files:
            z.writestr(n, d)
    return name


def build_sdist(sdist_directory, config_settings=None):
    p = _project()
    base = "%s-%s" % (p["name"], p["version"])
    name = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for rel in SDIST_FILES:
            t.add(os.path.join(HERE, rel), arcname="%s/%s" % (base, rel))
        info = _metadata(p).encode()
        ti = tarfile.TarInfo("%s/PKG-INFO" % base)
        ti.size = len(info)
        t.addfile(ti, io.BytesIO(info))
    return name
