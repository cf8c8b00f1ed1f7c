"""Where a run came from: git commit and dirtiness, DVC experiment, pipeline invocation, versions."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from trainlab.hashing import digest


def git_state(cwd: str = ".") -> dict[str, str]:
    """The commit checked out and whether tracked files other than DVC's own outputs differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=10).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = changed_files(git("status", "--porcelain", "-z", "--untracked-files=no"))
        prefix = git("rev-parse", "--show-prefix").strip()
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    # DVC deletes a stage's git-tracked outputs (metrics, plots) before running it and
    # rewrites dvc.lock after: those differ under every `dvc repro` without any user change.
    written_by_dvc = dvc_written_paths(Path(cwd), prefix)
    dirty = any(not _under_any(path, written_by_dvc) for path in changed)
    return {"git.commit": commit or "none", "git.dirty": str(dirty).lower()}


def changed_files(porcelain_z: str) -> list[str]:
    """Paths (from the repository root) in `git status --porcelain -z` output; a rename gives both."""
    entries = [e for e in porcelain_z.split("\0") if e]
    paths, i = [], 0
    while i < len(entries):
        status, path = entries[i][:2], entries[i][3:]
        paths.append(path)
        if "R" in status or "C" in status:   # the rename's source follows as its own entry
            paths.append(entries[i + 1] if i + 1 < len(entries) else "")
            i += 1
        i += 1
    return paths


def dvc_written_paths(project: Path, prefix: str = "") -> list[str]:
    """dvc.lock and every stage's outs, metrics and plots, as paths from the repository root."""
    import yaml

    # libyaml's loader where PyYAML has it: this runs at every run's start, search trials' too,
    # and the pure-Python parser took ~0.2 s of each trial's bookkeeping.
    try:
        text = (project / "dvc.yaml").read_text()
        spec = (yaml.load(text, Loader=yaml.CSafeLoader) if yaml.__with_libyaml__ else yaml.safe_load(text)) or {}
    except (OSError, yaml.YAMLError):
        return []
    found = [f"{prefix}dvc.lock"]
    stages = spec.get("stages") if isinstance(spec, dict) else None
    for stage in (stages or {}).values():
        if not isinstance(stage, dict):
            continue
        wdir = str(stage.get("wdir", ".")).strip("/")
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                name = next(iter(entry), None) if isinstance(entry, dict) else entry
                if isinstance(name, str):
                    found.append(os.path.normpath(f"{prefix}{wdir}/{name}"))
    return found


def _under_any(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def pipeline_run_id() -> str:
    """An id shared by every stage that one `dvc repro` / `dvc exp run` invocation starts.

    DVC runs each stage as a child process, so the nearest ancestor process whose
    command line is dvc (its pid plus start time, which makes it unique) identifies
    the invocation. Outside DVC the stage's own process is used.
    """
    pid = os.getpid()
    chosen = pid
    while pid > 1:
        if _is_dvc(_read(f"/proc/{pid}/cmdline").split("\0")):
            chosen = pid
            break
        pid = _parent_pid(pid)
    start = _read(f"/proc/{chosen}/stat").rsplit(")", 1)[-1].split()[19:20]
    return digest(f"{socket.gethostname()}:{chosen}:{start}".encode(), 12)


def _is_dvc(argv: list[str]) -> bool:
    """`dvc ...`, `python .../bin/dvc ...` (the console script via its shebang) or `python -m dvc ...`."""
    names = [os.path.basename(arg) for arg in argv[:3]]
    return "dvc" in names[:2] or names[1:3] == ["-m", "dvc"] or any("dvc/__main__" in arg for arg in argv[:2])


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _parent_pid(pid: int) -> int:
    fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 else 1


def versions() -> dict[str, str]:
    """Versions that decide whether a rerun can be bit-identical."""
    from trainlab import __version__

    # From the installed metadata (the same string, e.g. 2.13.0+cpu): a stage that trains
    # nothing (prepare) then never pays torch's import, ~1.7 s.
    return {"trainlab.version": __version__, "torch.version": metadata.version("torch"),
            "python.version": platform.python_version(), "host": socket.gethostname(), **cpu_tags()}


# The CPU's widest vector extensions, widest first, as /proc/cpuinfo's flags name them.
VECTOR_ISAS = (("amx_tile", "amx"), ("avx512f", "avx512"), ("avx2", "avx2"), ("sse4_2", "sse4.2"))


def cpu_tags() -> dict[str, str]:
    """The CPU type and the kernels torch runs: with the torch build and `trainer.threads`
    (a logged param), what decides the last bits of every result.

    All the same: a rerun is bit-identical. Otherwise the final test scores agree within
    the cross-CPU tolerance (trainlab.results_check).
    """
    info = _read("/proc/cpuinfo")
    fields = dict(line.split(":", 1) for line in info.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    tags = {"cpu.model": fields.get("model name", platform.processor() or "unknown"),
            "cpu.isa": next((name for flag, name in VECTOR_ISAS if flag in flags), "unknown")}
    torch = sys.modules.get("torch")   # only where the stage imported it: prepare never does
    if torch is not None:
        tags["torch.cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return tags


def environment_freeze() -> str:
    """The installed distributions, like `pip freeze` but without spawning pip."""
    lines = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                    if d.metadata["Name"]}, key=str.lower)
    return "\n".join(lines) + "\n"
