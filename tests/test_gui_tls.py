"""``chatgui`` with TLS for real: a TLS ``chatd``, windows on Xvfb driven with
xdotool, the pin file in the test's temporary folder (``CHATGUI_PINS``).

First use: the dialog shows the server's fingerprint, Trust logs in and pins
it. A changed certificate: a warning naming both fingerprints, no login,
nothing pinned, and the login window back (no reconnect behind the person).
"""

from __future__ import annotations

import json

from chatclient.pins import PinStore, grouped
from tests.test_gui_xvfb import Gui, connected, display
from tests.tls_support import running_tls_server

__all__ = ["display"]  # the fixture, shared with test_gui_xvfb

HOST = "127.0.0.1"


def test_first_use_asks_then_trust_logs_in_and_pins(display, tmp_path):
    pins = tmp_path / "pins.json"
    with running_tls_server(tmp_path) as tls:
        # The saved server was TLS: the next start ticks TLS by itself.
        (tmp_path / "carol.settings.json").write_text(json.dumps(
            {"name": "carol", "host": HOST, "port": tls.port, "mode": "guest", "tls": True}),
            encoding="utf-8")
        gui = Gui(display, tmp_path, "carol", env={"CHATGUI_PINS": str(pins)})
        try:
            gui.wait("the form", lambda s: s.get("window") == "login" and s["name"] == "carol")
            assert gui.state()["tls"] is True
            gui.type_text(gui.window("log in$"), "")
            gui.xdotool("key", "Return")
            state = gui.wait("the question", lambda s: s.get("window") == "trust"
                             and all(box[2] > 0 for box in s["boxes"].values()))
            assert state["offered"] == tls.fingerprint
            assert f"    {grouped(tls.fingerprint)}" in state["text"]
            assert not pins.exists()  # nothing pinned before the person says so
            gui.click(gui.window("new certificate$"), state["boxes"]["trust"])
            gui.wait("logged in", lambda s: connected(s) and s["name"] == "carol")
            assert PinStore(pins).get(HOST, tls.port) == tls.fingerprint
            assert tls.server.request({"type": "status"})["users"] == ["carol"]
            saved = json.loads((tmp_path / "carol.settings.json").read_text(encoding="utf-8"))
            assert saved["tls"] is True and saved["port"] == tls.port
        finally:
            gui.stop()


def test_cancel_at_first_use_pins_nothing(display, tmp_path):
    pins = tmp_path / "pins.json"
    with running_tls_server(tmp_path) as tls:
        gui = Gui(display, tmp_path, "erin", "--name", "erin", "--tls", "--host", HOST,
                  "--port", str(tls.port), env={"CHATGUI_PINS": str(pins)})
        try:
            state = gui.wait("the question", lambda s: s.get("window") == "trust"
                             and all(box[2] > 0 for box in s["boxes"].values()))
            assert state["offered"] == tls.fingerprint
            gui.click(gui.window("new certificate$"), state["boxes"]["cancel"])
            state = gui.wait("the login window", lambda s: s.get("window") == "login")
            assert "not trusted yet" in state["error"] and state["tls"] is True
            assert not pins.exists()
            assert tls.server.request({"type": "status"})["users"] == []
        finally:
            gui.stop()


def test_a_changed_certificate_is_refused_naming_both(display, tmp_path):
    pins = tmp_path / "pins.json"
    old = "ab" * 32  # pinned from "another server" that was on this host:port before
    with running_tls_server(tmp_path) as tls:
        PinStore(pins).pin(HOST, tls.port, old)
        before = pins.read_bytes()
        gui = Gui(display, tmp_path, "dave", "--name", "dave", "--tls", "--host", HOST,
                  "--port", str(tls.port), env={"CHATGUI_PINS": str(pins)})
        try:
            state = gui.wait("the warning", lambda s: s.get("window") == "changed"
                             and all(box[2] > 0 for box in s["boxes"].values()))
            assert (state["pinned"], state["offered"]) == (old, tls.fingerprint)
            text = "\n".join(state["text"])
            assert "CHANGED" in text
            assert grouped(old) in text and grouped(tls.fingerprint) in text
            gui.click(gui.window("certificate CHANGED$"), state["boxes"]["ok"])
            state = gui.wait("the login window", lambda s: s.get("window") == "login")
            assert grouped(old) in state["error"] and grouped(tls.fingerprint) in state["error"]
            assert pins.read_bytes() == before  # nothing pinned
            assert tls.server.request({"type": "status"})["users"] == []
        finally:
            gui.stop()


def test_a_new_certificate_at_a_reconnect_stops_it_with_the_warning(display, tmp_path):
    pins = tmp_path / "pins.json"
    with running_tls_server(tmp_path / "first") as first:
        port = first.port
        PinStore(pins).pin(HOST, port, first.fingerprint)  # pinned: no question at login
        before = pins.read_bytes()
        gui = Gui(display, tmp_path, "fay", "--name", "fay", "--tls", "--host", HOST,
                  "--port", str(port), env={"CHATGUI_PINS": str(pins)})
        try:
            gui.wait("logged in", connected)
        except BaseException:
            gui.stop()
            raise
    try:
        gui.wait("reconnecting", lambda s: s.get("status") == "reconnecting")
        # Another server (another self-signed certificate) on the same host:port.
        with running_tls_server(tmp_path / "second", "--tls-port", str(port)) as second:
            assert second.port == port and second.fingerprint != first.fingerprint
            state = gui.wait("the warning", lambda s: s.get("window") == "changed"
                             and all(box[2] > 0 for box in s["boxes"].values()))
            assert (state["pinned"], state["offered"]) == (first.fingerprint,
                                                           second.fingerprint)
            gui.click(gui.window("certificate CHANGED$"), state["boxes"]["ok"])
            state = gui.wait("offline", lambda s: s.get("status") == "offline")
            assert any(grouped(second.fingerprint) in line for line in state["lines"])
            assert second.server.request({"type": "status"})["users"] == []
            assert pins.read_bytes() == before
    finally:
        gui.stop()
