"""TLS for the desktop client: how to trust a server, and the two certificate dialogs.

The server is checked against the CAs of ``--ca``, else by the fingerprint
pinned for it (:mod:`chatclient.pins`), as the terminal client does. At first
use nothing is pinned: the connection is refused with the offered fingerprint
(:attr:`chatclient.net.Connection.refused`) and :func:`settle` shows it and
asks; on Trust it is pinned and the caller connects again. A pinned server
offering another certificate gets a warning naming both fingerprints and
nothing else: no reconnect and no new pin, since that certificate may be an
attacker's. Replacing a pin is a deliberate act outside this window.

Both dialogs open only after the refusal ended the connection attempt, so
while they wait for the person no connection needs polling.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import PySimpleGUI as sg

from chatclient import pins
from chatclient.net import TLSOptions

PINS_ENV = "CHATGUI_PINS"  # another pin file (tests); default: the one chat shares
IDLE_MS = 50
WARNING_COLOR = "#c62828"


def pin_store() -> pins.PinStore:
    path = os.environ.get(PINS_ENV)
    return pins.PinStore(Path(path) if path else None)


def options(tls: bool, ca: Path | None, host: str, port: int,
            store: pins.PinStore) -> TLSOptions | None:
    """How to trust ``host:port`` (None: plain TCP). With nothing pinned the
    attempt is refused with the offered fingerprint, for :func:`settle`."""
    if ca is not None:
        return TLSOptions(ca=ca)
    return TLSOptions(fingerprint=store.get(host, port)) if tls else None


def settle(refused: pins.CertificateRefused, host: str, port: int, store: pins.PinStore,
           state_file: Path | None = None) -> bool:
    """Ask about a first-use certificate (True: trusted and pinned, connect
    again) or warn about a changed one (False)."""
    server = pins.server_key(host, port)
    if refused.pinned is not None:
        warn_changed(refused, server, refused.pinned, state_file)
        return False
    answer = _dialog("chat - new certificate", [
        (f"The TLS certificate of {server} is new to this computer.", False),
        ("Its SHA-256 fingerprint is", False),
        (f"    {pins.grouped(refused.offered)}", False),
        ("Compare it with the one the operator's 'chatd status' shows.", False),
        ("Trust it and remember it?", False),
    ], {"-TRUST-": "Trust", "-CANCEL-": "Cancel"}, state_file,
        {"window": "trust", "server": server, "offered": refused.offered})
    if answer != "-TRUST-":
        return False
    store.pin(host, port, refused.offered)
    return True


def warn_changed(refused: pins.CertificateRefused, server: str, pinned: str,
                 state_file: Path | None = None) -> None:
    """The warning about a pinned server's new certificate, until dismissed."""
    _dialog("chat - certificate CHANGED", [
        (f"WARNING: the TLS certificate of {server} has CHANGED.", True),
        ("Pinned SHA-256 fingerprint:", False),
        (f"    {pins.grouped(pinned)}", False),
        ("The server offered:", False),
        (f"    {pins.grouped(refused.offered)}", False),
        ("Someone may be intercepting the connection: it was refused.", True),
        ("If the operator replaced the certificate, compare with 'chatd status'", False),
        ("and pin the new fingerprint on purpose (chat --fingerprint).", False),
    ], {"-OK-": "OK"}, state_file,
        {"window": "changed", "server": server, "offered": refused.offered, "pinned": pinned})


def _dialog(title: str, lines: list[tuple[str, bool]], buttons: dict[str, str],
            state_file: Path | None, state: dict[str, Any]) -> str | None:
    """A modal window until a button (its key) or the close box (None).

    The first button is not the default: Return must not trust by accident."""
    layout: list[list[Any]] = [
        [sg.Text(text, font=("DejaVu Sans Mono", 11) if text.startswith("    ") else None,
                 text_color=WARNING_COLOR if warn else None)] for text, warn in lines]
    layout.append([sg.Push(), *(sg.Button(label, key=key) for key, label in buttons.items())])
    window = sg.Window(title, layout, modal=True, finalize=True, font=("DejaVu Sans", 11))
    shown = ""
    try:
        while True:
            event, _ = window.read(timeout=IDLE_MS)
            if event != sg.TIMEOUT_EVENT:
                return event if event in buttons else None
            if state_file is not None:  # the boxes are known once the window is mapped
                boxes = {key.strip("-").lower(): _box(window[key].Widget) for key in buttons}
                dump = json.dumps({**state, "text": [text for text, _ in lines],
                                   "boxes": boxes})
                if dump != shown:
                    shown = dump
                    tmp = state_file.with_name(state_file.name + ".tmp")
                    tmp.write_text(dump, encoding="utf-8")
                    os.replace(tmp, state_file)
    finally:
        window.close()


def _box(widget: Any) -> list[int]:
    return [widget.winfo_rootx(), widget.winfo_rooty(), widget.winfo_width(),
            widget.winfo_height()]
