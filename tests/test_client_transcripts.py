"""Recorded conversations with a real ``chatd`` (tests/transcripts/) as test vectors:
a fresh session fed the same bytes, intents and times says and reports the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatclient.recording import MASK
from chatclient.transcript import outputs, replay

HERE = Path(__file__).parent / "transcripts"
FILES = sorted(HERE.glob("*.json"))


def test_there_are_transcripts() -> None:
    assert len(FILES) >= 2


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_replay_gives_the_same_frames_and_events(path: Path) -> None:
    recorded = json.loads(path.read_text())
    replayed = replay(recorded)
    assert outputs(replayed) == outputs(recorded)
    assert replayed["steps"] == recorded["steps"]


def test_reconnect_transcript_shows_each_message_once() -> None:
    recorded = json.loads((HERE / "reconnect_after_crash.json").read_text())
    events = [s["event"] for s in recorded["steps"] if "event" in s]
    shown = [(e["room"], e["msg"]["seq"]) for e in events if e["type"] == "MessageAdded"]
    assert len(shown) == len(set(shown)) == 3
    assert [e["resumed"] for e in events if e["type"] == "LoggedIn"] == [False, True]


def test_secrets_are_masked() -> None:
    text = (HERE / "login_join_say_edit.json").read_text()
    assert "correct horse" not in text and MASK in text
