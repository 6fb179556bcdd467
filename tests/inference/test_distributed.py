"""Two JAX processes on the loopback address (CPU collectives: gloo), against one process.

Three subprocesses run ``tests/inference/distributed_worker.py`` at once: two joined by
:func:`probkit.inference.distributed.initialize` on ``127.0.0.1`` with one CPU device each, and a
single process with two forced host devices (the same two-device layout, without the
distributed runtime). Same keys, so the chains and the data-parallel training steps see the same
numbers: every result is compared bit for bit.
"""

import os
import pathlib
import resource
import socket
import subprocess
import sys
import time

import equinox as eqx
import jax
import numpy as np
import pytest

import probkit

ROOT = pathlib.Path(__file__).parents[2]
TIMEOUT = 400  # seconds for all three processes (measured: 41 s on two lightly loaded cores)



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: pathlib.Path, process_id: int, num_processes: int, port: int, devices: int):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
           + f" --xla_force_host_platform_device_count={devices}"}
    cmd = [sys.executable, "-m", "tests.inference.distributed_worker", str(out),
           str(process_id), str(num_processes), str(port)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{0: ..., 1: ...}`` the two processes' results, ``-1`` the single process's, ``"dir"``
    the output folder, ``"seconds"`` the wall time of the three runs."""
    out = tmp_path_factory.mktemp("distributed")
    port = _free_port()
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = {pid: _launch(out, pid, 2, port, 1) for pid in (0, 1)}
    procs[-1] = _launch(out, -1, 1, 0, 2)
    deadline = start + TIMEOUT
    logs, failed = {}, False
    for pid, proc in procs.items():
        try:
            logs[pid] = proc.communicate(timeout=max(deadline - time.perf_counter(), 1))
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            logs[pid] = proc.communicate()
            failed = True
        failed = failed or proc.returncode != 0
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if failed:
        report = "\n".join(f"--- process {pid} (exit {procs[pid].returncode}) stderr:\n"
                           f"{err[-3000:]}" for pid, (_, err) in logs.items())
        pytest.fail(f"a worker failed or timed out after {seconds:.0f} s:\n{report}")
    print(f"\ntwo processes and the single-process reference: {seconds:.1f} s wall, "
          f"{cpu:.1f} s CPU (all three)")
    results = {pid: dict(np.load(out / f"result{pid}.npz")) for pid in procs}
    return {**results, "dir": out, "seconds": seconds}


def _equal(runs, prefix: str) -> int:
    """Assert that every ``prefix*`` result of both processes equals the single process's;
    return how many arrays were compared."""
    names = sorted(k for k in runs[-1] if k.startswith(prefix))
    for name in names:
        for pid in (0, 1):
            np.testing.assert_array_equal(runs[pid][name], runs[-1][name],
                                          err_msg=f"{name}, process {pid}")
    return len(names)


def _check_processes_see_all_devices(runs):
    for pid in (0, 1):
        assert int(runs[pid]["process_count"]) == 2
        assert int(runs[pid]["device_count"]) == 2
    assert int(runs[-1]["process_count"]) == 1 and int(runs[-1]["device_count"]) == 2


def _check_parallel_chains_over_two_processes_equal_one_process(runs):
    """Each process holds both chains (gathered) and one ArviZ object of both; the draws,
    sample stats and log-likelihood equal the single process's bit for bit."""
    assert _equal(runs, "hmc_") == 6
    for pid in (0, 1):
        assert runs[pid]["hmc_mu"].shape == (2, 50)
        assert int(runs[pid]["hmc_arviz_chains"]) == 2
        assert int(runs[pid]["hmc_num_devices"]) == 2
    assert np.all(np.isfinite(runs[0]["hmc_mu"])) and runs[0]["hmc_mu"].std() > 0


def _check_data_parallel_pfn_training_equals_one_process_with_one_checkpoint(runs):
    """Losses and weights equal the single process's bit for bit; one checkpoint per run (no
    second writer, no leftover temporary file); a run interrupted after its step-5 checkpoint
    and resumed in both processes ends where the uninterrupted run did."""
    assert _equal(runs, "pfn_") > 20
    shared = runs["dir"] / "shared"
    assert sorted(p.name for p in shared.iterdir()) == ["fresh.pk", "resume.pk"]
    ck = probkit.load(shared / "fresh.pk")
    assert ck.step == 10
    saved = jax.tree_util.tree_leaves(eqx.filter(ck.params, eqx.is_inexact_array))
    fresh = [runs[0][f"pfn_leaf{i}"] for i in range(len(saved))]
    for a, b in zip(saved, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
    for pid in (0, 1):
        assert int(runs[pid]["pfn_resumed_steps"]) == 10
        assert len(runs[pid]["pfn_resumed_losses"]) == 1  # steps 5..10 only: it did resume
        assert bool(runs[pid]["pfn_local"])  # process-local weights come back
        for i in range(len(saved)):
            np.testing.assert_array_equal(runs[pid][f"pfn_resumed_leaf{i}"],
                                          runs[-1][f"pfn_leaf{i}"])


def _check_time_budget_gives_one_step_count_on_all_processes(runs):
    """The step count estimated from each process's clock is process 0's on both."""
    assert int(runs[0]["budget_steps"]) == int(runs[1]["budget_steps"]) >= 10
    names = [k for k in runs[0] if k.startswith("budget_leaf")]
    for name in names:
        np.testing.assert_array_equal(runs[0][name], runs[1][name], err_msg=name)


def _check_data_parallel_neural_process_training_equals_one_process(runs):
    assert _equal(runs, "cnp_") > 10


def test_two_processes_equal_one_process_with_two_devices(runs):
    """All checks in one test: the three worker processes run once. (With pytest 9.2 and
    pytest-xdist 3.8, ``--dist loadgroup`` no longer keeps an ``xdist_group`` on one worker,
    so separate tests of this module ran the processes once per worker.)"""
    _check_processes_see_all_devices(runs)
    _check_parallel_chains_over_two_processes_equal_one_process(runs)
    _check_data_parallel_pfn_training_equals_one_process_with_one_checkpoint(runs)
    _check_time_budget_gives_one_step_count_on_all_processes(runs)
    _check_data_parallel_neural_process_training_equals_one_process(runs)
