"""The first process inside run-local's Linux namespaces: lock the file system, drop caps, exec.

``run-local`` starts ``unshare --user --map-root-user --net --mount [--pid --fork
--kill-child [--mount-proc]] python -I -S ns_init.py SPEC``. In those fresh namespaces this
script (standard library only, run as a file, never imported by the toolkit) is root of its
own user namespace, with no network interface but a down loopback. It then:

1. remounts every mount it can see read-only (so ``main.py`` can write nowhere on the host,
   the user's data at its original path included);
2. mounts fresh, empty ``tmpfs`` where asked (``/tmp``, ``/var/tmp``, ``/dev/shm``,
   ``/run``: scratch space, and no host unix-domain sockets there);
3. bind-mounts the run folder ``OUT`` read-write over itself (predictions, summary, cwd);
4. bind-mounts the data read-only where ``main.py`` expects it;
5. checks that the data refuses writes at both paths, then drops every capability (bounding,
   ambient, effective, permitted and inheritable sets, with ``no_new_privs``) so that
   ``main.py`` cannot undo any of it (``mount -o remount,rw`` fails), and checks that too;
6. writes what it found as JSON to the report file descriptor and ``exec``s ``main.py``.

Any step 3-5 that fails stops the run (exit 125) with the reason in the report: ``main.py``
never runs in a half-built sandbox. SPEC is a JSON object: ``rw`` (paths), ``ro_binds``
(``[source, target]`` pairs), ``tmpfs`` (paths), ``parent_ns`` (``{"net": inode, "pid":
inode}`` of run-local), ``report_fd``, ``cwd`` and ``argv`` (empty: report and exit 0, the
probe).
"""

import ctypes
import errno
import json
import os
import socket
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_RELATIME = 1 << 21
# statvfs flag -> mount flag; the kernel refuses a remount that clears a locked one of these.
KEPT_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_VERSION_3 = 0x20080522
SETUP_FAILED = 125

_LIBC = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """A sandbox step failed: main.py must not run."""


def _mount(source, target, fstype, flags, data=None):
    encode = lambda value: None if value is None else value.encode()  # noqa: E731
    result = _LIBC.mount(encode(source), encode(target), encode(fstype), flags, encode(data))
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number), target)


def _kept_flags(path):
    flags = os.statvfs(path).f_flag
    return sum(mount_flag for st_flag, mount_flag in KEPT_FLAGS if flags & st_flag)


def _remount(path, read_only):
    flags = MS_REMOUNT | MS_BIND | _kept_flags(path) | (MS_RDONLY if read_only else 0)
    _mount(None, path, None, flags)


def _mount_points():
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            field = line.split()[4]
            points.append(field.encode().decode("unicode_escape"))
    return sorted(set(points), key=lambda p: (p.count("/"), p))


def lock_file_system():
    """Remount every visible mount read-only; return ``(root_read_only, failed points)``."""
    failed = []
    for point in _mount_points():
        try:
            _remount(point, read_only=True)
        except OSError as error:
            failed.append(f"{point}: {error.strerror}")
    return os.statvfs("/").f_flag & os.ST_RDONLY != 0, failed


def mount_tmpfs(paths):
    """Empty tmpfs over each existing folder of ``paths``; return those mounted."""
    done = []
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
            done.append(path)
    return done


def bind(source_fd, target, read_only):
    """Bind the folder open as ``source_fd`` on ``target``, read-only or read-write.

    The source is named by its descriptor so that a tmpfs mounted since (``/tmp``) may hide
    its path; a missing ``target`` (hidden the same way) is created first.
    """
    os.makedirs(target, exist_ok=True)
    _mount(f"/proc/self/fd/{source_fd}", target, None, MS_BIND)
    _remount(target, read_only=read_only)


def refuses_writes(folder):
    """Whether creating a file in ``folder`` and opening a file in it for writing both fail."""
    try:
        os.close(os.open(os.path.join(folder, ".oncloudn-write-probe"), os.O_CREAT | os.O_WRONLY))
    except OSError:
        pass
    else:
        os.unlink(os.path.join(folder, ".oncloudn-write-probe"))
        return False
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                os.close(os.open(os.path.join(dirpath, name), os.O_WRONLY))
            except OSError:
                return True
            return False
    return True


def _cap_last():
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
            return int(handle.read())
    except OSError:
        return 63


def drop_capabilities():
    """Empty the bounding and ambient sets, set no_new_privs, clear the process's sets."""
    if _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SetupError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    for cap in range(_cap_last() + 1):
        if _LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            raise SetupError(f"prctl(PR_CAPBSET_DROP, {cap}) failed")
    _LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if _LIBC.capset(header, data) != 0:
        raise SetupError(f"capset failed ({os.strerror(ctypes.get_errno())})")


def capability_sets():
    """``{"CapEff": hex, "CapBnd": hex, ...}`` from ``/proc/self/status``."""
    sets = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("Cap"):
                key, value = line.split(":")
                sets[key] = value.strip()
    return sets


def _namespace(kind):
    return os.stat(f"/proc/self/ns/{kind}").st_ino


def _network_interfaces():
    try:
        return sorted(name for _index, name in socket.if_nameindex())
    except OSError:
        return []


def remount_refused(targets):
    """Whether ``mount -o remount,rw`` of each target fails (after the caps are dropped)."""
    for target in targets:
        try:
            _remount(target, read_only=False)
        except OSError:
            continue
        return False
    return True


def build(spec, report):
    """Steps 1-5 of the module docstring; fill ``report``; raise SetupError on a failure."""
    parent = spec.get("parent_ns", {})
    report["network_namespace"] = _namespace("net") != parent.get("net")
    report["pid_namespace"] = _namespace("pid") != parent.get("pid")
    report["network_interfaces"] = _network_interfaces()
    report["root_read_only"], report["remount_failures"] = lock_file_system()
    sources = [source for source, _target in spec.get("ro_binds", [])]
    report["data_read_only"] = all(refuses_writes(p) for p in sources)
    rw = [(os.open(path, os.O_PATH), path) for path in spec.get("rw", [])]
    ro = [(os.open(s, os.O_PATH), t) for s, t in spec.get("ro_binds", [])]
    report["tmpfs"] = mount_tmpfs(spec.get("tmpfs", []))
    for source_fd, target in rw:
        bind(source_fd, target, read_only=False)
    for source_fd, target in ro:
        bind(source_fd, target, read_only=True)
    for source_fd, _target in rw + ro:
        os.close(source_fd)
    targets = [target for _source, target in spec.get("ro_binds", [])]
    report["data_read_only"] &= all(refuses_writes(p) for p in targets)
    if not report["data_read_only"]:
        raise SetupError("the data mount accepted a write")
    drop_capabilities()
    caps = capability_sets()
    report["capabilities"] = caps
    report["caps_dropped"] = all(int(caps.get(k, "1"), 16) == 0 for k in ("CapEff", "CapBnd"))
    if not report["caps_dropped"]:
        raise SetupError(f"capabilities remain after dropping them ({caps})")
    report["remount_rw_refused"] = remount_refused([t for _, t in spec.get("ro_binds", [])])
    if not report["remount_rw_refused"]:
        raise SetupError("the read-only data mount could be remounted read-write")


def main(argv):
    """Build the sandbox from the JSON spec in ``argv[1]``, report, then exec main.py."""
    spec = json.loads(argv[1])
    report = {"ok": False}
    try:
        build(spec, report)
        report["ok"] = True
    except (OSError, SetupError) as error:
        report["error"] = str(error)
    with os.fdopen(spec["report_fd"], "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    if not report["ok"]:
        print(f"oncloudn sandbox: {report['error']}", file=sys.stderr)
        return SETUP_FAILED
    if not spec.get("argv"):
        return 0
    os.chdir(spec["cwd"])
    os.execve(spec["argv"][0], spec["argv"], os.environ)
    return SETUP_FAILED  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv))
