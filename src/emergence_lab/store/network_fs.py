"""Whether a SQLite store lies on a network file system, where jobs on several nodes must not
share it: SQLite's locks (and the write-ahead log the embedded store uses) are not safe over
NFS, Lustre, SMB and their kin, and a store there corrupts or deadlocks under a cluster's
concurrent jobs. Such sweeps log to a tracking server instead (`make server`)."""

from __future__ import annotations

import os
from pathlib import Path

from emergence_lab.store.connection import local_store_dir

# Linux's names (/proc/mounts) of file systems that live on another machine
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph",
              "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.cephfs", "9p", "afs", "ncpfs",
              "fuse.s3fs", "fuse.gcsfuse", "pvfs2", "orangefs", "panfs", "wekafs")


def mounts(table: str | None = None) -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount, from /proc/mounts (or `table`)."""
    if table is None:
        try:
            table = Path("/proc/mounts").read_text()
        except OSError:
            return []
    rows = [line.split() for line in table.splitlines()]
    # mount points escape spaces as \\040
    return [(r[1].replace("\\040", " "), r[2]) for r in rows if len(r) >= 3]


def filesystem_of(path: Path, table: str | None = None) -> tuple[str, str] | None:
    """(mount point, type) of the file system holding `path` (or its nearest existing
    parent); None where the mounts cannot be read."""
    path = Path(os.path.realpath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    best = None
    for point, fstype in mounts(table):
        inside = path == Path(point) or Path(point) in path.parents
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def check_shared_store(uri: str, table: str | None = None) -> None:
    """For a sweep whose jobs run on other machines: a SQLite store on a network file system
    is refused (ValueError, one line naming the file system and what to do instead)."""
    folder = local_store_dir(uri)
    if folder is None:
        return
    found = filesystem_of(folder, table)
    if found is not None and found[1] in NETWORK_FS:
        raise ValueError(
            f"tracking.uri={uri} lies on {found[1]} ({found[0]}), a network file system: "
            f"SQLite is not safe there for jobs on several nodes. Run make server on a machine "
            f"the nodes reach (HOST=0.0.0.0, with its login) and pass "
            f"tracking.uri=http://THAT-HOST:5000")
