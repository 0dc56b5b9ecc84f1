"""Progress output: a bar on a terminal, clean plain lines in a file, one stage at a time."""

from __future__ import annotations

import io
import os
import pty

import pytest
from conftest import characterized

from bgm_batch.progress import Progress
from bgm_batch.settings import TextSettings
from bgm_batch.stages.narrate import narrate
from bgm_batch.text.template import TemplateTextBackend


def _is_clean(text: str) -> bool:
    """No carriage returns or escape sequences: what a log file can hold."""
    return "\r" not in text and "\x1b" not in text


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with Progress("render", 40, unit="seg", stream=out) as bar:
        for _ in range(40):
            bar.update()
    lines = out.getvalue().splitlines()
    assert _is_clean(out.getvalue())
    assert len(lines) == 10  # one per tenth
    assert lines[0].startswith("render: 4/40 seg (10%, ")
    assert lines[-1].startswith("render: 40/40 seg (100%, ")


def test_a_large_step_gives_one_line() -> None:
    out = io.StringIO()
    with Progress("caption", 7, unit="segment", stream=out) as bar:
        bar.update(3)  # 42%: past four tenths at once
        bar.update(4)
    lines = out.getvalue().splitlines()
    shown = [line.split(" (")[0] for line in lines]
    assert shown == ["caption: 3/7 segment", "caption: 7/7 segment"]


@pytest.mark.parametrize(("enabled", "total"), [(False, 10), (True, 0)])
def test_nothing_when_disabled_or_empty(enabled: bool, total: int) -> None:
    out = io.StringIO()
    with Progress("render", total, stream=out, enabled=enabled) as bar:
        bar.update(total)
    assert out.getvalue() == ""


def _read_all(fd: int) -> str:
    """Everything a pseudo-terminal's far side was sent (EIO once it is closed and drained)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_a_bar_on_a_terminal() -> None:
    leader, follower = pty.openpty()
    with (
        os.fdopen(follower, "w") as terminal,
        Progress("render", 5, unit="seg", stream=terminal) as bar,
    ):
        bar.update(5)
    shown = _read_all(leader)
    os.close(leader)
    assert "\r" in shown and "render" in shown and "5/5" in shown  # tqdm redraws in place


def test_narrate_shows_its_stages_one_after_the_other(
    tmp_path, capsys: pytest.CaptureFixture
) -> None:
    frame = characterized(2, 5)
    settings = TextSettings(cache_dir=tmp_path / "cache")
    narrate(frame, TemplateTextBackend(), settings, seed=0, progress=True)
    err = capsys.readouterr().err
    assert _is_clean(err)
    lines = err.splitlines()
    stages = [line.split(":")[0] for line in lines]
    first_caption = stages.index("caption")
    assert set(stages[:first_caption]) == {"narrative"}  # never interleaved
    assert set(stages[first_caption:]) == {"caption"}
    assert lines[first_caption - 1].startswith("narrative: 10/10 segment (100%")
    assert lines[-1].startswith("caption: 10/10 segment (100%")
    narrate(frame, TemplateTextBackend(), settings, seed=0, progress=False)
    assert capsys.readouterr().err == ""
