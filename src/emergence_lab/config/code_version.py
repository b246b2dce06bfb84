"""Which code a run ran: the checkout's commit and the state of its tree (clean, or dirty with
a digest of what differs), asked of git from the package's own folder about the whole checkout.

What differs is the uncommitted diff of tracked files and every untracked file that git does not
ignore (a new model or data set is one new file: it makes the tree dirty too)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

HERE = Path(__file__).parent  # the code's own checkout is asked about itself
PATCH_FILE_LIMIT = 1 << 20  # an untracked file larger than this is named in the patch, not copied


def git_commit(where: Path = HERE) -> str:
    """The commit of the code, 'unknown' outside a git checkout."""
    return _git("rev-parse", "HEAD", where=where) or "unknown"


def code_state(where: Path = HERE) -> str:
    """'clean', or 'dirty:<digest>' when the checkout's files (all of it, not only the folder of
    `where`) differ from its commit: the digest of the diff and of the untracked files tells two
    edited trees apart. '' outside a git checkout: a run from an edited tree must not look like
    its commit."""
    if not _git("rev-parse", "HEAD", where=where):
        return ""
    diff, untracked = _git("diff", "HEAD", "--", ":/", strip=False, where=where), _untracked(where)
    if not diff and not untracked:
        return "clean"
    h = hashlib.sha1(diff.encode())
    for path in untracked:
        h.update(f"\0{path}\0".encode())
        with path.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return f"dirty:{h.hexdigest()[:12]}"


def code_diff(where: Path = HERE) -> str:
    """The checkout's uncommitted changes (git diff HEAD, every folder) and its untracked files
    as new files, '' for none: a patch that makes the commit into the tree that ran."""
    parts = [_git("diff", "HEAD", "--", ":/", strip=False, where=where)]
    for path in _untracked(where):
        if path.stat().st_size > PATCH_FILE_LIMIT:
            parts.append(f"# untracked {path.name}: {path.stat().st_size} bytes, not copied\n")
            continue
        out = subprocess.run(["git", "diff", "--no-index", "--", "/dev/null", str(path)],
                             capture_output=True, text=True, cwd=where, timeout=10)
        parts.append(out.stdout)  # exit code 1: the files differ, as they must
    return "".join(parts)


def _untracked(where: Path) -> list[Path]:
    """The checkout's files git neither tracks nor ignores (their paths, sorted)."""
    top = _git("rev-parse", "--show-toplevel", where=where)
    names = _git("ls-files", "--others", "--exclude-standard", "--full-name", "-z", "--", ":/",
                 strip=False, where=where)
    return sorted(Path(top) / n for n in names.split("\0") if n and (Path(top) / n).is_file())


def _git(*args: str, strip: bool = True, where: Path = HERE) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=where,
                             timeout=10)
        return (out.stdout.strip() if strip else out.stdout) if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""
