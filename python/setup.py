"""Bundles the libvram.so that the repository's build produced (build/lib, else
target/release) into the package, so `pip install ./python` works on a fresh machine after the
README's build. Without one, the package still installs and finds the library at import time
($VRAM_LIBRARY, the checkout, or the system's library path)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent.parent


class bundle_libvram(build_py):
    def run(self):
        super().run()
        for cand in (ROOT / "build" / "lib" / "libvram.so", ROOT / "target" / "release" / "libvram.so"):
            if cand.exists():
                dest = Path(self.build_lib) / "vram" / "libvram.so"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cand.resolve(), dest)
                print(f"vram: bundled {cand.resolve()}")
                break
        else:
            print("vram: no libvram.so built yet; the package will look for one at import time")


setup(cmdclass={"build_py": bundle_libvram})
