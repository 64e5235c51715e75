"""run-local against hostile ``main.py`` files and zips: network, data, remount, bombs, kills.

The namespace tests skip, with the reason, only where this machine cannot make Linux
namespaces; the data tests then still check that the user's data comes out unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from toydata import write_toy_dataset

from oncloudn.cli.main import main
from oncloudn.errors import DataError, SubmissionError
from oncloudn.models.builders import make_threshold_folder
from oncloudn.submission import isolation as isolation_module
from oncloudn.submission.isolation import namespace_support, summary_line
from oncloudn.submission.locks import processes_with_env, try_lock
from oncloudn.submission.pack import pack_submission
from oncloudn.submission.run_local import run_local
from oncloudn.submission.unzip import ZipLimits, extract_archive

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_IDS = ["0000", "abcd", "efgh"]
MIB = 1 << 20


@pytest.fixture
def test_root(tmp_path: Path) -> Path:
    """A dataset root with a test split, like /codeexecution/data."""
    return write_toy_dataset(tmp_path / "data", TEST_IDS, ["A", "A", "B"], split="test", seed=3)


def _zip(path: Path, main_py: str, extra: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("main.py", textwrap.dedent(main_py))
        for name, text in (extra or {}).items():
            archive.writestr(name, text)
    return path


def _results(log: Path) -> dict[str, str]:
    lines = [line for line in log.read_text().splitlines() if line.startswith("RESULTS ")]
    assert lines, log.read_text()
    return json.loads(lines[-1][len("RESULTS ") :])


def _namespaces_or_skip() -> None:
    variant, reason, _ = namespace_support()
    if variant is None:
        pytest.skip(f"this machine cannot make Linux namespaces: {reason}")


HOSTILE_NETWORK = """
    import _socket, json, socket, subprocess, sys
    ports = json.load(open("ports.json"))
    tcp, udp = ports["tcp"], ports["udp"]
    results = {}

    def attempt(name, action):
        try:
            results[name] = action()
        except Exception as error:
            results[name] = "refused: %s" % error

    def connect_ex():
        code = socket.socket().connect_ex(("127.0.0.1", tcp))
        return "reached" if code == 0 else "refused: errno %d" % code

    def raw_socket():
        _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM).connect(("127.0.0.1", tcp))
        return "reached"

    def udp_sendto():
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", udp))
        return "sent"

    def isolated_python():
        code = "import socket; socket.socket().connect(('127.0.0.1', %d))" % tcp
        done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
        return "reached" if done.returncode == 0 else "refused: " + done.stderr[-200:]

    def bash_dev_tcp():
        command = "echo > /dev/tcp/127.0.0.1/%d" % tcp
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
        return "reached" if done.returncode == 0 else "refused: " + done.stderr[-200:]

    attempt("connect_ex", connect_ex)
    attempt("raw_socket", raw_socket)
    attempt("udp_sendto", udp_sendto)
    attempt("python_-I", isolated_python)
    if ports["bash"]:
        attempt("bash_dev_tcp", bash_dev_tcp)
    print("RESULTS " + json.dumps(results))
"""


def test_hostile_network(test_root: Path, tmp_path: Path) -> None:
    _namespaces_or_skip()
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    tcp.settimeout(0.3)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.3)
    ports = {"tcp": tcp.getsockname()[1], "udp": udp.getsockname()[1]}
    ports["bash"] = shutil.which("bash") is not None
    zip_path = _zip(tmp_path / "net.zip", HOSTILE_NETWORK, {"ports.json": json.dumps(ports)})
    with tcp, udp:
        result = run_local(zip_path, test_root, tmp_path / "run", time_limit_s=120)
        with pytest.raises(OSError):  # nothing connected ...
            tcp.accept()
        with pytest.raises(OSError):  # ... and no datagram arrived
            udp.recvfrom(16)
    results = _results(tmp_path / "run" / "main.log")
    expected = {"connect_ex", "raw_socket", "udp_sendto", "python_-I"}
    assert expected | ({"bash_dev_tcp"} if ports["bash"] else set()) == set(results)
    assert all(value.startswith("refused") for value in results.values()), results
    isolation = result.isolation
    assert isolation["mode"] == "namespaces" and isolation["network_namespace"]
    assert isolation["network_interfaces"] == ["lo"]
    assert json.loads(result.run_json.read_text())["isolation"] == isolation


HOSTILE_DATA = """
    import ctypes, json, os, subprocess
    paths = json.load(open("paths.json"))
    mount_point = os.path.join(os.environ["ONCLOUDN_DATA_DIR"], "test_features")
    targets = {"mounted": os.path.join(mount_point, "abcd", "B02.tif")}
    if paths.get("features"):
        targets["original"] = os.path.join(paths["features"], "abcd", "B02.tif")
    results = {}

    def flip(name, path):
        try:
            info = os.stat(path)
            os.chmod(path, 0o644)
            with open(path, "r+b") as handle:
                first = handle.read(1)
                handle.seek(0)
                handle.write(bytes([first[0] ^ 0xFF]))
            os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
            results[name] = "flipped"
        except OSError as error:
            results[name] = "refused: %s" % error

    for name, path in targets.items():
        flip(name, path)
    if paths.get("features"):
        try:
            done = subprocess.run(
                ["mount", "-o", "remount,rw,bind", mount_point], capture_output=True, text=True
            )
            results["mount_command"] = (
                "remounted" if done.returncode == 0 else "refused: " + done.stderr.strip()
            )
        except OSError:
            pass  # no mount command: the system call below is the test
        libc = ctypes.CDLL(None, use_errno=True)
        code = libc.mount(None, mount_point.encode(), None, 32 | 4096, None)  # REMOUNT | BIND
        results["mount_syscall"] = (
            "remounted" if code == 0 else "refused: errno %d" % ctypes.get_errno()
        )
        flip("mounted_after_remount", targets["mounted"])
    print("RESULTS " + json.dumps(results))
"""


def _flip_attack(test_root: Path, tmp_path: Path, with_path: bool):
    """Run HOSTILE_DATA; check the user's band file came out unchanged; return the outcome."""
    band = test_root / "test_features" / "abcd" / "B02.tif"
    before = (band.read_bytes(), band.stat().st_mtime_ns, stat.S_IMODE(band.stat().st_mode))
    paths = {"features": str(test_root / "test_features")} if with_path else {}
    zip_path = _zip(tmp_path / "data.zip", HOSTILE_DATA, {"paths.json": json.dumps(paths)})
    result = run_local(zip_path, test_root, tmp_path / "run", time_limit_s=120)
    after = (band.read_bytes(), band.stat().st_mtime_ns, stat.S_IMODE(band.stat().st_mode))
    assert after == before
    return result, _results(tmp_path / "run" / "main.log")


def test_hostile_data_writes_without_namespaces(
    test_root: Path, tmp_path: Path, monkeypatch
) -> None:
    """Where no namespace can be made: a read-only copy, the change reported, said plainly."""
    monkeypatch.setattr(isolation_module, "namespace_support", lambda: (None, "simulated", {}))
    result, results = _flip_attack(test_root, tmp_path, with_path=False)
    assert results == {"mounted": "flipped"}  # the copy: main.py runs as its owner
    assert any("modified the read-only data copy" in p for p in result.problems)
    assert result.isolation["mode"] == "copy" and result.isolation["reason"] == "simulated"
    assert "NONE by the operating system (simulated)" in summary_line(result.isolation)


def test_hostile_data_writes(test_root: Path, tmp_path: Path) -> None:
    """A byte flipped with its mtime restored, at both paths, then a remount: all refused."""
    _namespaces_or_skip()
    result, results = _flip_attack(test_root, tmp_path, with_path=True)
    assert set(results) >= {"mounted", "original", "mount_syscall", "mounted_after_remount"}
    refused = {name: value for name, value in results.items() if value.startswith("refused")}
    assert refused == results, results
    assert "Read-only file system" in results["mounted"]
    assert "Read-only file system" in results["original"]
    isolation = json.loads(result.run_json.read_text())["isolation"]
    assert isolation["data_read_only_mount"] and isolation["file_system_read_only"]
    assert isolation["caps_dropped"] and isolation["remount_rw_refused"]
    assert not any("modified" in p for p in result.problems)
    assert summary_line(isolation).startswith("isolation: Linux namespaces (no network, data on")


def _bomb(path: Path, size: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("main.py", "print('never runs')\n")
        with archive.open("model/weights.bin", "w", force_zip64=True) as entry:
            block = bytes(MIB)
            for _ in range(size // MIB):
                entry.write(block)
    return path


def test_zip_bombs_and_links_are_refused(test_root: Path, tmp_path: Path) -> None:
    limits = ZipLimits(max_bytes=64 * MIB)
    bomb = _bomb(tmp_path / "bomb.zip", 96 * MIB)
    assert bomb.stat().st_size < MIB
    out = tmp_path / "run"
    with pytest.raises(SubmissionError, match="more than the limit of 67,108,864 bytes"):
        run_local(bomb, test_root, out, zip_limits=limits)
    assert not out.exists()  # refused from the zip's directory, before OUT was made
    # Declared sizes under the limit, but 32 MiB of zeros: the ratio stops it while writing.
    ratio_bomb = _bomb(tmp_path / "ratio.zip", 32 * MIB)
    with pytest.raises(SubmissionError, match="expands more than 100 times"):
        run_local(ratio_bomb, test_root, out, zip_limits=limits)
    assert [p.name for p in out.iterdir()] == [".run-local.lock"]  # nothing half-made
    good = pack_submission([make_threshold_folder(tmp_path / "thr")], tmp_path / "s.zip").path
    assert run_local(good, test_root, out, time_limit_s=120).passed  # the retry needs no --force
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as archive:
        archive.writestr("main.py", "")
        info = zipfile.ZipInfo("model/weights.pt")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(SubmissionError, match="symbolic link"):
        run_local(link, test_root, tmp_path / "link")
    traversal = _zip(tmp_path / "up.zip", "", {"../../evil.py": "x"})
    with pytest.raises(SubmissionError, match="unsafe path"):
        run_local(traversal, test_root, tmp_path / "up")
    many = _zip(tmp_path / "many.zip", "", {f"f{i}.txt": "" for i in range(12)})
    with pytest.raises(SubmissionError, match="13 entries, more than the limit of 10"):
        run_local(many, test_root, tmp_path / "many", zip_limits=ZipLimits(max_entries=10))
    assert not any((tmp_path / name).exists() for name in ("link", "up", "many"))


def test_bytes_written_are_counted(tmp_path: Path) -> None:
    """The cap holds while writing, whatever the zip's directory said."""
    bomb = _bomb(tmp_path / "bomb.zip", 4 * MIB)
    limits = ZipLimits(max_bytes=2 * MIB, max_ratio=1e9)
    with zipfile.ZipFile(bomb) as archive, pytest.raises(SubmissionError, match="passed the limit"):
        extract_archive(archive, tmp_path / "out", limits)
    assert (tmp_path / "out" / "model" / "weights.bin").stat().st_size <= 2 * MIB


def test_bad_inputs_leave_no_out_folder(test_root: Path, tmp_path: Path, capsys) -> None:
    good = pack_submission([make_threshold_folder(tmp_path / "thr")], tmp_path / "s.zip").path
    out = tmp_path / "run"
    with pytest.raises(DataError, match="no test_features"):
        run_local(good, tmp_path / "nowhere", out)
    no_main = tmp_path / "nomain.zip"
    with zipfile.ZipFile(no_main, "w") as archive:
        archive.writestr("model/manifest.json", "{}")
    assert main(["run-local", str(no_main), str(test_root), str(out)]) == 2
    assert "main.py is missing" in capsys.readouterr().err
    not_zip = tmp_path / "x.zip"
    not_zip.write_text("not a zip")
    with pytest.raises(SubmissionError, match="not a readable zip"):
        run_local(not_zip, test_root, out)
    assert not out.exists()


def test_held_lock_is_refused_in_one_line(test_root: Path, tmp_path: Path, capsys) -> None:
    good = pack_submission([make_threshold_folder(tmp_path / "thr")], tmp_path / "s.zip").path
    out = tmp_path / "run"
    out.mkdir()
    fd = try_lock(out / ".run-local.lock")  # a run (or what it left running) is alive
    capsys.readouterr()
    try:
        assert main(["run-local", str(good), str(test_root), str(out), "--force"]) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is in use by another run-local" in errors[0]
    assert "Traceback" not in err  # (a warning may say that no namespaces exist here)
    assert [p.name for p in out.iterdir()] == [".run-local.lock"]


HANGING = """
    import os, subprocess, sys, time
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open("started", "w") as handle:
        handle.write("%d %d" % (os.getpid(), worker.pid))
    predictions = os.environ["ONCLOUDN_PREDICTIONS_DIR"]
    while True:  # an orphan would keep overwriting the next run's predictions
        for chip in ("0000", "abcd", "efgh"):
            with open(os.path.join(predictions, chip + ".tif"), "wb") as handle:
                handle.write(b"orphan")
        time.sleep(0.05)
"""


def _run_processes(out: Path) -> list[int]:
    """Host pids of processes whose environment names ``out``'s predictions folder."""
    return processes_with_env("ONCLOUDN_PREDICTIONS_DIR", str(out / "predictions"))


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.parametrize("isolation", ["namespaces", "copy"])
def test_kill_9_run_local(test_root: Path, tmp_path: Path, isolation: str) -> None:
    """kill -9 on run-local: main.py dies with it; the next run into OUT is not disturbed.

    In namespaces the PID namespace takes main.py's whole process tree. Without them only
    main.py itself dies (PR_SET_PDEATHSIG); a worker it started outlives it, and the next
    run into OUT is refused, naming it, until that worker ends.
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("reading other processes' environments needs Linux /proc")
    if isolation == "namespaces":
        _namespaces_or_skip()
    zip_path = _zip(tmp_path / "hang.zip", HANGING)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "oncloudn.cli.main", "run-local", str(zip_path)]
    command += [str(test_root), str(out), "--isolation", isolation, "--time-limit", "300"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    runner = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = out / "codeexecution" / "started"
    try:
        assert _wait_for(started.is_file, 240), runner.stderr.read() if runner.poll() else ""
        assert _wait_for(lambda: len(_run_processes(out)) >= 2, 30)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    good = pack_submission([make_threshold_folder(tmp_path / "thr")], tmp_path / "s.zip").path
    if isolation == "copy":
        main_pid, worker_pid = map(int, started.read_text().split())
        assert _wait_for(lambda: _run_processes(out) == [worker_pid], 10)
        assert _wait_for(lambda: not _alive(main_pid), 10)  # dead (a zombie at most)
        with pytest.raises(SubmissionError, match=f"left running \\(pids {worker_pid}\\)"):
            run_local(good, test_root, out, force=True, isolation="copy")
        os.kill(worker_pid, signal.SIGKILL)
    assert _wait_for(lambda: _run_processes(out) == [], 10), _run_processes(out)
    result = run_local(good, test_root, out, force=True, isolation=isolation, time_limit_s=120)
    assert result.passed, result.problems
    written = {p.name: p.read_bytes() for p in result.predictions_dir.iterdir()}
    time.sleep(0.5)
    assert {p.name: p.read_bytes() for p in result.predictions_dir.iterdir()} == written
    assert b"orphan" not in b"".join(written.values())


def test_half_built_sandbox_never_runs_main_py(tmp_path: Path) -> None:
    """A failed sandbox step (here: a data folder that does not exist) stops before exec."""
    _namespaces_or_skip()
    variant, _, probe = namespace_support()
    assert probe["ok"] and probe["caps_dropped"] and probe["remount_rw_refused"]
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    spec = isolation_module.NamespaceSpec(
        rw=[str(out)],
        ro_binds=[[str(tmp_path / "absent"), str(out / "data")]],
        tmpfs=[],
        cwd=str(out),
        argv=["/bin/sh", "-c", f"touch {out / 'ran'}"],
    )
    read_fd, write_fd = os.pipe()
    command = isolation_module.namespace_command(variant, spec.to_json(write_fd))
    done = subprocess.run(command, pass_fds=(write_fd,), capture_output=True, text=True)
    os.close(write_fd)
    report = isolation_module.read_report(read_fd)
    assert done.returncode == 125 and not report["ok"] and "absent" in report["error"]
    assert not (out / "ran").exists()
