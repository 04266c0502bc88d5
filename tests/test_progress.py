"""What a run shows in the terminal while training: a progress line that fits any width, a steady ETA."""

from __future__ import annotations

import io

from rich.console import Console

from i2i.runlog import Eta, RunLog

LOSSES = {"G_AB": 1.966, "G_BA": 0.594, "cycle_A": 4.468, "cycle_B": 4.698, "D_B": 0.470, "D_A": 0.704,
          "idt_A": 0.123, "idt_B": 0.456}


def rendered(log: RunLog, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    console.print(log.progress.get_renderable())
    return console.file.getvalue().splitlines()


def test_step_rate_and_eta_survive_an_80_column_terminal(tmp_path):
    console = Console(file=io.StringIO(), width=80, force_terminal=True)
    with RunLog(tmp_path, console, total=123456, start=0) as log:
        log.record(5000, 1, LOSSES, {"G": 2e-4})
        for width in (80, 60):
            first, *rest = rendered(log, width)
            assert "5000/" in first and "it/s" in first and "eta " in first, first
            shown = " ".join(rest)
            assert all(name in shown for name in LOSSES), rest  # the losses wrap below, none cut off
            assert all(len(line) <= width for line in (first, *rest))


def test_eta_is_steady_when_the_last_steps_swing():
    """Steps at 0.1 s with one slow interval (a validation) and one fast: the ETA moves by a few %, not 10×."""
    eta, step, shown = Eta(), 0, []
    for sec in [1.0] + [0.1] * 20 + [2.0] + [0.1] * 5 + [0.01] + [0.1] * 5:  # the first interval: start-up
        step += 10
        h, m, s = map(int, eta(step, 100_000, sec).split(":"))
        shown.append(h * 3600 + m * 60 + s)
    later = shown[2:]
    assert max(later) / min(later) < 1.3, shown
    assert abs(shown[-1] - 0.1 * (100_000 - step)) / (0.1 * (100_000 - step)) < 0.25
