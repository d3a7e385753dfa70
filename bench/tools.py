"""Finding (and, when allowed, installing) the outside tools: wrk, nginx, py-spy, peer gateways.

Debian packages come from `apt-get` (only as root); Python tools go into virtual environments
under a cache directory outside the repository (`$BANANAGATE_BENCH_CACHE`, else
`$XDG_CACHE_HOME/bananagate-bench`, else `~/.cache/bananagate-bench`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def cache_dir() -> Path:
    explicit = os.environ.get("BANANAGATE_BENCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bananagate-bench"


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def find_executable(name: str, extra_dirs: tuple[Path, ...] = ()) -> str | None:
    """`name` on PATH or in the usual sbin directories (nginx lives in /usr/sbin)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in (*extra_dirs, Path("/usr/sbin"), Path("/usr/local/sbin")):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def apt_install(package: str, log: list[str]) -> bool:
    """`apt-get install -y <package>` (after one `apt-get update` if the first try fails); root only."""
    if not is_root() or shutil.which("apt-get") is None:
        log.append(f"cannot install {package}: needs root and apt-get")
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", package]
    for attempt in range(2):
        if attempt:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300, check=False)
        try:
            done = subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            log.append(f"apt-get install {package} timed out")
            return False
        if done.returncode == 0:
            log.append(f"installed {package} with apt-get")
            return True
    log.append(f"apt-get install {package} failed: {done.stderr.decode(errors='replace')[-300:]}")
    return False


def ensure_debian_tool(executable: str, package: str, *, allow_install: bool, log: list[str]) -> str | None:
    path = find_executable(executable)
    if path is None and allow_install:
        apt_install(package, log)
        path = find_executable(executable)
    return path


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(name: str, requirements: list[str], *, allow_install: bool, log: list[str]) -> Path | None:
    """A virtual environment `<cache>/<name>` with `requirements` installed; its python, or None.

    A marker file records what was installed, so a later run reuses the environment as it is."""
    venv = cache_dir() / name
    python = venv_python(venv)
    marker = venv / ".bench-installed"
    wanted = "\n".join(requirements)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if not allow_install:
        log.append(f"{name}: not installed in {venv} (installing is not allowed in this run)")
        return None
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *requirements],
            check=True,
            capture_output=True,
            timeout=1200,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        text = detail.decode(errors="replace")[-400:] if isinstance(detail, bytes) else str(detail)
        log.append(f"{name}: pip install {' '.join(requirements)} failed: {text or exc}")
        return None
    marker.write_text(wanted)
    log.append(f"{name}: installed {' '.join(requirements)} in {venv}")
    return python


def command_version(argv: list[str]) -> str | None:
    """The first line a `--version`-style command prints (on stdout or stderr)."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else None
