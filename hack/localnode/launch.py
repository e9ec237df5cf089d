"""Enter a pod's namespaces, mount its volumes, drop privileges and exec the command.

Run by the agent as a plain script (standard library only, no PYTHONPATH needed):

    python -E -s launch.py SPEC.json

SPEC is written by localnode.containers: netns path, hostname, mounts, uid/gid/groups,
working directory, argv and env. The process keeps its pid through the exec, so the
agent's Popen pid is the container's pid. Nothing here touches the host's mount table:
the mounts live in a private mount namespace that dies with the container's processes.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
START_ERROR_EXIT = 128

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(
    source: str | None, target: str, flags: int, fstype: str | None = None, data: str = ""
) -> None:
    src = source.encode() if source is not None else None
    kind = fstype.encode() if fstype is not None else None
    options = data.encode() if data else None
    _check(_libc.mount(src, target.encode(), kind, flags, options), f"mount {source} {target}")


def expose(paths: list[str], stage: str) -> None:
    """Make `paths` reachable for a non-root user when an ancestor is private (e.g. /root).

    The private ancestor is shadowed by a tmpfs (mode 755) in this mount namespace only,
    and each path is bind-mounted back at its own place inside it.
    """
    for index, path in enumerate(paths):
        parts = path.strip("/").split("/")
        blocked = None
        for depth in range(1, len(parts)):
            ancestor = "/" + "/".join(parts[:depth])
            if not os.stat(ancestor).st_mode & 0o001:
                blocked = ancestor
                break
        if blocked is None:
            continue
        staged = os.path.join(stage, str(index))
        os.makedirs(staged, exist_ok=True)
        _mount(path, staged, MS_BIND | MS_REC)
        _mount("tmpfs", blocked, MS_NOSUID | MS_NODEV, "tmpfs", "mode=755")
        os.makedirs(path, exist_ok=True)
        _mount(staged, path, MS_MOVE)


def enter_namespaces(spec: dict[str, object]) -> None:
    netns = spec.get("netns")
    if isinstance(netns, str) and netns:
        fd = os.open(netns, os.O_RDONLY)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns {netns}")
        finally:
            os.close(fd)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    _mount(None, "/", MS_REC | MS_PRIVATE)
    hostname = str(spec.get("hostname") or "")
    if hostname:
        encoded = hostname.encode()
        _check(_libc.sethostname(encoded, len(encoded)), "sethostname")


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mount_volumes(mounts: list[dict[str, object]], keep_visible: str = REPO) -> None:
    """Bind each volume at its target. A volume may be mounted over a directory that holds
    the repository (a checkout under /tmp, and an emptyDir at /tmp, say): the repository
    holds the pod's programs (.venv) and the agent's own files, so it is bound back at its
    place on top of such a volume, as a container image's files would stay visible."""
    # Resolve every source before mounting anything: a volume mounted at /tmp (a common
    # emptyDir) would otherwise hide a later source that lives under the host's /tmp.
    sources = [os.open(str(mount["source"]), os.O_PATH) for mount in mounts]
    repo_fd, repo_stat = os.open(keep_visible, os.O_PATH), os.stat(keep_visible)
    for mount, fd in zip(mounts, sources, strict=True):
        source, target = f"/proc/self/fd/{fd}", str(mount["target"])
        if not os.path.lexists(target):
            if os.path.isdir(source):
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "a"):
                    pass
        _mount(source, target, MS_BIND | MS_REC)
        if mount.get("readOnly"):
            _mount(None, target, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    try:
        now = os.stat(keep_visible)
        hidden = (now.st_dev, now.st_ino) != (repo_stat.st_dev, repo_stat.st_ino)
    except FileNotFoundError:
        hidden = True
    if hidden:
        os.makedirs(keep_visible, exist_ok=True)
        _mount(f"/proc/self/fd/{repo_fd}", keep_visible, MS_BIND | MS_REC)
    for fd in [*sources, repo_fd]:
        os.close(fd)


def drop_privileges(spec: dict[str, object]) -> None:
    uid, gid = spec.get("uid"), spec.get("gid")
    groups = spec.get("groups") or []
    assert isinstance(groups, list)
    if gid is not None or groups:
        os.setgroups([int(g) for g in groups])
    if gid is not None:
        os.setgid(int(str(gid)))
    if uid is not None:
        os.setuid(int(str(uid)))


def main() -> None:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    try:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(number, signal.SIG_DFL)
        enter_namespaces(spec)
        stage = spec.get("stage")
        if spec.get("expose") and isinstance(stage, str):
            expose([str(p) for p in spec["expose"]], stage)
        mount_volumes(spec.get("mounts") or [])
        workdir = spec.get("workingDir") or "/"
        os.makedirs(workdir, exist_ok=True)
        drop_privileges(spec)
        os.chdir(workdir)
        argv = [str(a) for a in spec["argv"]]
        os.execvpe(argv[0], argv, {str(k): str(v) for k, v in spec["env"].items()})
    except Exception as error:  # reported to the agent, then exit
        message = f"failed to start container: {error}"
        print(message, file=sys.stderr, flush=True)
        start_error = spec.get("startErrorFile")
        if isinstance(start_error, str):
            with open(start_error, "w") as handle:
                handle.write(message)
        os._exit(START_ERROR_EXIT)


if __name__ == "__main__":
    main()
