"""What the environment oasis runs in provides to instances on this machine: its Python, and Spark and Java
where they are installed, and its memory. Used by the first start (the `local` site's image) and wherever a site registered
without its own runtime falls back to this machine's."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def local_runtime() -> dict:
    runtime: dict = {"python": sys.executable}
    try:
        import pyspark  # lazy: a probe of an optional, heavy dependency, made only when a runtime is described

        runtime["spark_home"] = str(Path(pyspark.__file__).parent)
    except ImportError:
        pass
    java = shutil.which("java")
    if java:
        runtime["java_home"] = str(Path(os.path.realpath(java)).parent.parent)
    return runtime


def total_ram_mb() -> int:
    """This machine's memory (the `local` host's capacity)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 1024
