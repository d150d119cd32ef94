#!/usr/bin/python3
"""Puts pimtrain's Python package on /usr/bin/python3's path: writes pimtrain.pth (two lines:
this source tree's python/ folder and BUILD_DIR/python, where the compiled _pimtrain lives)
into the interpreter's site directory (/usr/local/lib/python3.X/dist-packages as root, the
user site directory otherwise). Rewrites the file only when its contents change, atomically,
so it is safe to run any number of times.

Usage: /usr/bin/python3 python/install_pth.py [BUILD_DIR] [--site DIR]
  BUILD_DIR  the CMake build directory (default: build/release)
  --site     write into DIR instead of the interpreter's site directory
"""
import argparse
import os
import site
import sys
import sysconfig


def site_dir():
    # Debian's interpreter reads /usr/local/lib/python3.X/dist-packages; others their purelib.
    local = [p for p in site.getsitepackages() if p.startswith("/usr/local/")]
    target = local[0] if local else sysconfig.get_paths()["purelib"]
    probe = target if os.path.isdir(target) else os.path.dirname(target)
    return target if os.access(probe, os.W_OK) else site.getusersitepackages()


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", nargs="?", default=os.path.join(root, "build", "release"))
    ap.add_argument("--site", default="")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    text = f"{os.path.join(root, 'python')}\n{os.path.join(build, 'python')}\n"
    target = args.site or site_dir()
    os.makedirs(target, exist_ok=True)
    path = os.path.join(target, "pimtrain.pth")
    try:
        with open(path) as f:
            if f.read() == text:
                return 0
    except FileNotFoundError:
        pass
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(f"pimtrain: wrote {path} (python/ and {os.path.join(build, 'python')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
