"""The top frames of a sampling profile of a running albench driver (py-spy's collapsed stacks), as bench.scale's
`--profile` prints them: for each frame, the share of all samples and of the main thread's that pass through it.

py-spy is a tool of this bench, not of albench: `.venv/bin/pip install py-spy` (it reads the process from outside).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>[^ ]+) \((?P<file>[^:)]+)(?::\d+)?\)$")


def record(pid: int, seconds: float) -> Path | None:
    """py-spy's collapsed stacks of process `pid` over `seconds` (threads named), or None without py-spy."""
    spy = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed (`.venv/bin/pip install py-spy`): no profile")
        return None
    out = Path(tempfile.mkdtemp()) / "driver.txt"
    command = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-f", "raw", "-t", "--nonblocking", "-o", out]
    subprocess.run([str(c) for c in command], capture_output=True, check=False)
    return out if out.exists() else None


def _name(frame: str) -> str:
    found = FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    return f"{found['function']} ({Path(found['file']).name})"


def top_frames(collapsed: Path, n: int = 15) -> str:
    """A markdown table: the frames with the largest inclusive share of the samples (each counted once a stack)."""
    total, main, through, through_main = 0, 0, Counter(), Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames, samples = stack.split(";"), int(count)
        is_main = "MainThread" in frames[0] or "main thread" in frames[0].lower()
        total += samples
        main += samples * is_main
        for name in {_name(f) for f in frames[1:]}:
            through[name] += samples
            through_main[name] += samples * is_main
    # the frames (nearly) every main-thread sample passes through (the CLI, Tune's loop) say nothing: left out
    scaffolding = {name for name, count in through_main.items() if count >= 0.98 * main}
    ranked = [(name, count) for name, count in through.most_common() if name not in scaffolding][:n]
    rows = [
        f"| `{name}` | {100 * count / total:.0f} % | {100 * through_main[name] / max(main, 1):.0f} % |"
        for name, count in ranked
    ]
    head = (
        f"{total} samples, {100 * main / max(total, 1):.0f} % on the main thread; frames in 98 % or more of the "
        f"main thread's samples left out: {', '.join(sorted(scaffolding)) or 'none'}\n\n"
    )
    return head + "| frame | of all samples | of the main thread's |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n"
