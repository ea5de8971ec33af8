"""Runs told apart by name: the one going, one whose process is gone, one whose pid another
process took since, and names that are not a run's at all."""

from __future__ import annotations

import os
import subprocess
import time

from tests.compose.runs import alive, run_name, run_of


def test_this_process_run_is_alive() -> None:
    assert alive(run_name())


def test_a_run_whose_process_ended_is_not() -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert not alive(run_name(pid=finished.pid, started=time.time() - 1))


def test_a_pid_taken_by_a_later_process_is_not_the_run() -> None:
    # This process started after a run of its pid named a day ago: another process, the run dead.
    assert not alive(run_name(pid=os.getpid(), started=time.time() - 86_400))


def test_names_that_are_not_a_run_are_left_alone() -> None:
    assert alive("uplink")
    assert alive("uplink-test-nightly")
    # An older run's name, its pid only: alive while that pid is.
    assert alive(f"uplink-test-{os.getpid()}")


def test_a_project_belongs_to_the_run_before_its_last_dash() -> None:
    assert run_of("uplink-test-1796696248-30199-single") == "uplink-test-1796696248-30199"
