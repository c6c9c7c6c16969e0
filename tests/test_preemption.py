"""Stopped the way clusters stop jobs: one writer per run folder, no orphaned workers, graceful
preemption (SIGTERM/SIGINT -> checkpoint -> exit 75), safe checkpoint choice on resume, disk
full while saving, and the throughput meter. Real processes and real signals throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from genhancer_llava.config import load_config
from genhancer_llava.errors import STOPPED_EXIT, GenhancerError, Stopped
from genhancer_llava.train.checkpoint import Pin, latest_checkpoint, rotate
from genhancer_llava.train.launch import accelerate_config, launch_stage, prepare_run_dir
from genhancer_llava.train.meter import WindowMeter
from genhancer_llava.train.run_lock import OWNER_LOCK, TRAIN_LOCK, RunLock

from .conftest import REPO, run_python


def _config(tiny_clip, out, *overrides):
    return load_config(
        "tiny", overrides=[f"encoder.path={tiny_clip}", f"run.output_dir={out}", *overrides]
    )


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", **extra)


def _train(run_dir, *extra, **env):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "genhancer_llava.train",
            "--run_dir",
            str(run_dir),
            "--stage",
            "stage1",
            *extra,
        ],
        cwd=REPO,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _processes_of(marker: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose command line mentions `marker` (the run folder)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        if any(marker in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _first_checkpoint(run_dir: Path):
    folder = run_dir / "stage1" / "checkpoints"
    return (
        sorted(p for p in folder.glob("step-*") if not p.name.endswith(".tmp"))
        if folder.is_dir()
        else []
    )


def _start_enhance(tiny_clip, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    """`genhancer enhance` on a long tiny run, in a session of its own (a process group to kill)."""
    cmd = [
        sys.executable,
        "-m",
        "genhancer_llava.cli",
        "enhance",
        "--output",
        str(out),
        "--preset",
        "tiny",
        f"encoder.path={tiny_clip}",
        "stage1.steps=100000",
        "run.save_every=2",
        *extra,
    ]
    with log.open("w") as f:
        return subprocess.Popen(
            cmd, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


# ---- one writer per run folder ---------------------------------------------------------------


_HOLD = """
import os, sys, time
from genhancer_llava.train.run_lock import RunLock
RunLock(sys.argv[1], sys.argv[2], "a test holder").acquire()
if os.fork() == 0:  # a child (like a DataLoader worker) that outlives its parent
    time.sleep(60); os._exit(0)
print("held", flush=True)
time.sleep(600)
"""


def _hold(folder: Path, name: str = OWNER_LOCK) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder), name],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_naming_pid_and_host_then_stale_lock_taken_over(tmp_path, capsys):
    import socket

    from genhancer_llava.cli.main import main

    holder = _hold(tmp_path / "run")
    try:
        with pytest.raises(GenhancerError) as refused:
            RunLock(tmp_path / "run").acquire()
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "a test holder" in message and "\n" not in message
        with pytest.raises(SystemExit) as exit_info:  # `genhancer export` too
            main(["export", str(tmp_path / "run")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and f"pid {holder.pid}" in err and "\n" not in err
    finally:
        holder.kill()
        holder.wait()
    # the holder died by SIGKILL; its forked child still runs, but does not keep the lock
    with RunLock(tmp_path / "run", command="second") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert "taking over the stale lock" in capsys.readouterr().err
    # a clean release leaves nothing stale behind
    with RunLock(tmp_path / "run"):
        pass
    assert "stale" not in capsys.readouterr().err


def test_a_training_rank_0_holds_the_folder_against_enhance(tiny_clip, tmp_path, capsys):
    from genhancer_llava.cli.main import main

    holder = _hold(tmp_path / "run", TRAIN_LOCK)  # as rank 0 of a worker the CLI lost
    try:
        with pytest.raises(SystemExit):
            main(
                [
                    "enhance",
                    "--preset",
                    "tiny",
                    f"encoder.path={tiny_clip}",
                    "--output",
                    str(tmp_path / "run"),
                    "--resume",
                    "latest",
                ]
            )
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and f"pid {holder.pid}" in err and "\n" not in err
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before writing anything


@pytest.mark.slow
def test_concurrent_second_enhance_and_export_are_refused(tiny_clip, tmp_path):
    out = tmp_path / "run"
    first = _start_enhance(tiny_clip, out, tmp_path / "first.log")
    try:
        _wait_for(lambda: _first_checkpoint(out), 300, "the first checkpoint", first)
        for argv in (
            [
                "enhance",
                "--preset",
                "tiny",
                f"encoder.path={tiny_clip}",
                "--output",
                str(out),
                "--resume",
                "latest",
            ],
            ["export", str(out)],
        ):
            second = run_python("-m", "genhancer_llava.cli", *argv)
            assert second.returncode == 2, second.stderr[-2000:]
            last = second.stderr.strip().splitlines()[-1]
            assert last.startswith(
                f"error: {out} is in use by genhancer enhance (pid {first.pid} on host "
            ), last
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    _wait_for(lambda: not _processes_of(str(out)), 120, "the workers to go")


# ---- no orphans, graceful stop of a launched run ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig,target",
    [
        (signal.SIGKILL, "cli"),
        (signal.SIGKILL, "group"),
        (signal.SIGKILL, "launcher"),
        (signal.SIGTERM, "cli"),
        (signal.SIGTERM, "group"),
        (signal.SIGTERM, "launcher"),
    ],
    ids=["kill-cli", "kill-group", "kill-launcher", "term-cli", "term-group", "term-launcher"],
)
def test_no_orphans_whatever_kills_the_cli(tiny_clip, tmp_path, sig, target):
    out = tmp_path / "run"
    cli = _start_enhance(tiny_clip, out, tmp_path / "cli.log")
    try:
        _wait_for(lambda: _first_checkpoint(out), 300, "the first checkpoint", cli)
        workers = [
            p
            for p in _processes_of(str(out))
            if "genhancer_llava.train" in p.cmdline()
            and "accelerate.commands.launch" not in " ".join(p.cmdline())
        ]
        assert workers, "no training worker found"
        if target == "cli":
            os.kill(cli.pid, sig)
        elif target == "group":
            os.killpg(cli.pid, sig)
        else:
            launcher = psutil.Process(cli.pid).children()[0]
            os.kill(launcher.pid, sig)
        code = cli.wait(timeout=300)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    # nothing of this run outlives it: launcher and workers are gone, the folder is free
    _wait_for(lambda: not _processes_of(str(out)), 120, "every process of the run to end")
    RunLock(out, TRAIN_LOCK).acquire().release()
    RunLock(out, OWNER_LOCK).acquire().release()
    log = (tmp_path / "cli.log").read_text()
    if sig == signal.SIGTERM:  # a clean stop: checkpoint, exit 75, one line saying how to resume
        assert code == STOPPED_EXIT, log[-3000:]
        last = log.strip().splitlines()[-1]
        assert last.startswith("stopped: [stage1] SIGTERM received: stopped after step "), last
        assert last.endswith(
            f"continue with: genhancer enhance --output {out} --preset tiny "
            f"encoder.path={tiny_clip} stage1.steps=100000 "
            "run.save_every=2 --resume latest"
        ), last
        assert "Traceback" not in log, log[-3000:]
        step = int(last.split("stopped after step ")[1].split()[0])
        assert latest_checkpoint_of(out).name == f"step-{step:08d}"
    else:
        assert code == -signal.SIGKILL or target == "launcher"
    # SIGKILLed or not, the workers stopped through SIGTERM and wrote a last checkpoint
    assert "stopped: [stage1] SIGTERM received" in log, log[-3000:]


def latest_checkpoint_of(out: Path):
    from genhancer_llava.train.run_dir import RunDir

    return latest_checkpoint(RunDir(out), "stage1")


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_both_ranks_at_the_same_step_and_resumes(tiny_clip, tmp_path):
    cfg = _config(
        tiny_clip, tmp_path / "run", "stage1.steps=5", "run.save_every=100", "data.num_images=64"
    )
    run = prepare_run_dir(cfg, overwrite=False, resume=False)
    os.environ.update(GENHANCER_FAULT="sigterm-after-step:2", GENHANCER_FAULT_RANK="1")
    try:
        with pytest.raises(Stopped) as stopped:
            launch_stage(run, "stage1", 2, accelerate_config(2))
    finally:
        del os.environ["GENHANCER_FAULT"], os.environ["GENHANCER_FAULT_RANK"]
    assert "SIGTERM received: stopped after step 2 of 5" in str(stopped.value)
    folder = latest_checkpoint(run, "stage1")
    assert folder.name == "step-00000002"
    progress = json.loads((folder / "progress.json").read_text())
    assert progress["batches_per_rank"] == [2, 2]  # both ranks stopped after the same step
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(progress["files"])
    launch_stage(run, "stage1", 2, accelerate_config(2), resume="latest")
    summary = run.summary("stage1")
    assert summary["steps"] == 5 and summary["images_seen"] == 5 * 4 * 2


_STOP = """
import os, signal
from genhancer_llava.errors import Stopped
from genhancer_llava.train.processes import StopRequest
stop = StopRequest().install()
try:
    os.kill(os.getpid(), signal.SIGINT)  # during setup: leave at once
except Stopped as err:
    print("setup:", err)
stop = StopRequest().install()
stop.armed = True  # in the loop: only a request, read at the next step boundary
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGINT)  # a second signal does not change the first
print("loop:", stop.name)
"""


def test_stop_signals_end_setup_at_once_and_become_a_request_in_the_loop():
    proc = run_python("-c", _STOP)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "setup: SIGINT received before training began; nothing new to save, the checkpoints "
        "so far are kept",
        "loop: SIGTERM",
    ]


# ---- resume picks a checkpoint safely ------------------------------------------------------------


def _fake_checkpoint(root: Path, step: int) -> Path:
    folder = root / f"step-{step:08d}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    (folder / "progress.json").write_text(
        json.dumps({"step": step, "batches_per_rank": [step], "files": {"model.safetensors": 100}})
    )
    return folder


def test_rotation_never_deletes_a_pinned_checkpoint(tmp_path, capsys):
    old, new = _fake_checkpoint(tmp_path, 1), _fake_checkpoint(tmp_path, 2)
    pin = Pin(old)
    assert pin.acquire()
    rotate(tmp_path, keep=1)
    assert old.is_dir() and "kept for now" in capsys.readouterr().out
    pin.release()
    rotate(tmp_path, keep=1)
    assert not old.exists() and new.is_dir()
    assert not Pin(old).acquire()  # deleted: nothing to pin


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_resume_skips_a_damaged_checkpoint_for_the_previous_one(tiny_clip, tmp_path, damage):
    run = prepare_run_dir(_config(tiny_clip, tmp_path / "run", "run.save_every=2"), False, False)
    killed = _train(run.root, GENHANCER_FAULT="kill-after-step:5")
    assert killed.returncode == -signal.SIGKILL
    assert "[stage1] checkpoint step-00000004 written in " in killed.stdout  # time in the log
    newest = latest_checkpoint(run, "stage1")
    assert newest.name == "step-00000004"
    weights = newest / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        weights.unlink()
    resumed = _train(run.root, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        "warning: [stage1] skipping checkpoint step-00000004: model.safetensors is "
        + ("truncated (1000 of " if damage == "truncate" else "missing")
    ) in resumed.stdout
    assert "step-00000002 at step 2" in resumed.stdout
    assert run.summary("stage1")["steps"] == 6


# ---- disk full while writing a checkpoint --------------------------------------------------------


@pytest.mark.slow
def test_disk_full_in_a_checkpoint_stops_in_one_line_and_keeps_the_previous(tiny_clip, tmp_path):
    run = prepare_run_dir(_config(tiny_clip, tmp_path / "run", "run.save_every=2"), False, False)
    proc = _train(run.root, GENHANCER_FAULT="disk-full-in-checkpoint:4")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    previous = run.checkpoints("stage1") / "step-00000002"
    assert last == (
        f"error: [stage1] could not write the checkpoint of step 4 in "
        f"{run.checkpoints('stage1')} (No space left on device); {previous} is kept; "
        "free space there and continue with --resume latest"
    )
    assert sorted(p.name for p in run.checkpoints("stage1").iterdir()) == ["step-00000002"]
    resumed = _train(run.root, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-00000002 at step 2" in resumed.stdout


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4.5 MB tmpfs (room for one tiny checkpoint, not two); needs root and mount rights."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4500k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mount.stderr.strip()}); the fault-hook "
            "test above covers the same path"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_really_full_disk_stops_in_one_line_and_keeps_the_previous(tiny_clip, small_tmpfs):
    run = prepare_run_dir(_config(tiny_clip, small_tmpfs / "run", "run.save_every=2"), False, False)
    proc = _train(run.root)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: [stage1] could not write the checkpoint of step 4 in "), last
    assert "(No space left on device); " in last and "step-00000002 is kept" in last
    assert sorted(p.name for p in run.checkpoints("stage1").iterdir()) == ["step-00000002"]
    subprocess.run(["mount", "-o", "remount,size=32m", str(small_tmpfs)], check=True)
    resumed = _train(run.root, "--resume", "latest")  # space freed: go on from step 2
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-00000002 at step 2" in resumed.stdout


# ---- honest throughput ---------------------------------------------------------------------------


def test_throughput_window_leaves_checkpoint_time_out():
    now = [0.0]
    meter = WindowMeter(clock=lambda: now[0])
    meter.add(40)
    now[0] = 2.0  # 2 s of training ...
    with meter.paused():
        now[0] = 12.0  # ... then a 10 s checkpoint
    meter.add(40)
    now[0] = 14.0  # ... then 2 s more
    assert meter.last_pause_s == 10.0
    assert meter.take() == pytest.approx(80 / 4.0)  # not 80 / 14
    now[0] = 15.0  # the next window starts at the last log line, not at the start
    meter.add(10)
    assert meter.take() == pytest.approx(10.0)
