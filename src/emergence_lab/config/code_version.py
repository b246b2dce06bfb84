"""Which code a run ran: the checkout's commit and the state of its tree (clean, or dirty with
a digest of what differs), asked of git from the package's own folder about the whole checkout.

What differs is the uncommitted diff of tracked files and every untracked file that git does not
ignore (a new model or data set is one new file: it makes the tree dirty too)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).parent  # the code's own checkout is asked about itself
FILE_LIMIT = 1 << 20  # an untracked file larger than this counts by its name and size
MAX_FILES = 1000  # untracked files past these count by name and size (a folder git should ignore)
MAX_PATCH_FILES = 100  # untracked files copied into a run's patch (the rest are named)


def git_commit(where: Path = HERE) -> str:
    """The commit of the code, 'unknown' outside a git checkout."""
    return _git("rev-parse", "HEAD", where=where) or "unknown"


def code_state(where: Path = HERE) -> str:
    """'clean', or 'dirty:<digest>' when the checkout's files (all of it, not only the folder of
    `where`) differ from its commit: the digest of the diff and of the untracked files (their
    paths from the checkout's root, and their contents up to FILE_LIMIT: the same tree in two
    checkouts is one state) tells two edited trees apart. '' outside a git checkout: a run from
    an edited tree must not look like its commit."""
    if not _git("rev-parse", "HEAD", where=where):
        return ""
    diff, (top, untracked) = _git("diff", "HEAD", "--", ":/", strip=False, where=where), \
        _untracked(where)
    if not diff and not untracked:
        return "clean"
    h = hashlib.sha1(diff.encode())
    for i, name in enumerate(untracked):
        h.update(f"\0{name}\0".encode())
        try:
            if (top / name).is_symlink():  # what git would store of it: its target
                h.update(f"link:{os.readlink(top / name)}".encode())
                continue
            size = (top / name).stat().st_size
            h.update(str(size).encode() if size > FILE_LIMIT or i >= MAX_FILES
                     else (top / name).read_bytes())
        except OSError:  # gone meanwhile (an editor's swap file): its name alone
            h.update(b"?")
    return f"dirty:{h.hexdigest()[:12]}"


def code_diff(where: Path = HERE) -> str:
    """The checkout's uncommitted changes (git diff HEAD, every folder) and its untracked files
    as new files (the first MAX_PATCH_FILES of at most FILE_LIMIT; the others named), '' for
    none: a patch that makes the commit into the tree that ran (git apply, from its root)."""
    parts = [_git("diff", "HEAD", "--", ":/", strip=False, where=where)]
    top, untracked = _untracked(where)
    for i, name in enumerate(untracked):
        try:
            if (top / name).is_symlink():  # its target (a folder of code is not copied)
                parts.append(f"# untracked link {name} -> {os.readlink(top / name)}\n")
                continue
            size = (top / name).stat().st_size
            if size > FILE_LIMIT or i >= MAX_PATCH_FILES:
                parts.append(f"# untracked {name}: {size} bytes, not copied\n")
                continue
            parts.append(subprocess.run(  # exit code 1: the files differ, as they must
                ["git", "diff", "--no-index", "--", "/dev/null", name], capture_output=True,
                text=True, cwd=top, timeout=10).stdout)
        except (OSError, subprocess.SubprocessError):
            parts.append(f"# untracked {name}: unreadable\n")
    return "".join(parts)


def _untracked(where: Path) -> tuple[Path, list[str]]:
    """The checkout's root and the files git neither tracks nor ignores (paths from the root,
    sorted)."""
    top = _git("rev-parse", "--show-toplevel", where=where)
    names = _git("ls-files", "--others", "--exclude-standard", "--full-name", "-z", "--", ":/",
                 strip=False, where=where)
    return Path(top), sorted(n for n in names.split("\0") if n and (
        (Path(top) / n).is_file() or (Path(top) / n).is_symlink()))  # a link to a folder too


def _git(*args: str, strip: bool = True, where: Path = HERE) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=where,
                             timeout=10)
        return (out.stdout.strip() if strip else out.stdout) if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""
