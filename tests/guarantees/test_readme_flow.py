"""The README's idempotency example, run as a user would paste it (host and key file swapped)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import REPO
from tests.guarantees.conftest import Rig

README = (REPO / "README.md").read_text()


def test_readme_idempotency_example_replays(fresh: Rig, tmp_path: Path) -> None:
    start = README.index("## Request guarantees")
    section = README[start : README.index("\n## ", start + 1)]
    (script,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    script = script.replace("http://127.0.0.1:8000", fresh.gateway.url)
    script = script.replace(
        "~/.local/share/bananagate/default.key", str(fresh.gateway.data_dir / "default.key")
    )
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.lower().startswith("idempotent-replayed: true")
    assert fresh.upstream_calls() == 1
