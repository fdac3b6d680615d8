"""An X display for the GUI tests and scripts, and pictures of it.

``xvfb()`` starts Xvfb on a display it picks itself (``-displayfd``), so runs
never collide. ``screenshot()`` reads the screen with libX11's ``XGetImage``
through ctypes and writes a PNG with zlib alone: no image package, no
ImageMagick, nothing beyond what the GUI tests already need.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator

START_WAIT = 15.0
SCREEN = (1280, 800)


@contextlib.contextmanager
def xvfb(size: tuple[int, int] = SCREEN) -> Iterator[str]:
    """A fresh Xvfb; yields its display name (":N")."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", f"{size[0]}x{size[1]}x24",
         "-nolisten", "tcp"],
        pass_fds=[write_end], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    number = b""
    deadline = time.monotonic() + START_WAIT
    try:
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError("Xvfb did not start in time")
            chunk = os.read(read_end, 16)
            if not chunk:
                raise AssertionError(f"Xvfb exited with {proc.wait(START_WAIT)}")
            number += chunk
        yield f":{int(number)}"
    finally:
        os.close(read_end)
        proc.terminate()
        try:
            proc.wait(START_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(START_WAIT)


class _XImage(ctypes.Structure):
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
                ("format", ctypes.c_int), ("data", ctypes.POINTER(ctypes.c_ubyte)),
                ("byte_order", ctypes.c_int), ("bitmap_unit", ctypes.c_int),
                ("bitmap_bit_order", ctypes.c_int), ("bitmap_pad", ctypes.c_int),
                ("depth", ctypes.c_int), ("bytes_per_line", ctypes.c_int),
                ("bits_per_pixel", ctypes.c_int)]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def screenshot(display: str, box: tuple[int, int, int, int]) -> bytes:
    """The rectangle ``box`` (x, y, width, height) of the screen as an RGB PNG.

    Xvfb's 24-bit screens are 32 bits a pixel, blue first (ZPixmap, LSBFirst).
    """
    x11 = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11") or "libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XGetImage.restype = ctypes.POINTER(_XImage)
    x11.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int,
                              ctypes.c_uint, ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
    x11.XFree.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open display {display}"
    x, y, width, height = box
    try:
        image = x11.XGetImage(dpy, x11.XDefaultRootWindow(dpy), x, y, width, height,
                              0xFFFFFFFF, 2)  # AllPlanes, ZPixmap
        assert image, "XGetImage failed (is the box on the screen?)"
        info = image.contents
        assert info.bits_per_pixel == 32, info.bits_per_pixel
        raw = ctypes.string_at(info.data, info.bytes_per_line * height)
        x11.XFree(ctypes.cast(info.data, ctypes.c_void_p))  # what XDestroyImage (a macro) does
        x11.XFree(image)
    finally:
        x11.XCloseDisplay(dpy)
    rows = []
    for row in range(height):
        line = raw[row * info.bytes_per_line: row * info.bytes_per_line + width * 4]
        rgb = bytearray(width * 3)
        rgb[0::3], rgb[1::3], rgb[2::3] = line[2::4], line[1::4], line[0::4]
        rows.append(b"\0" + bytes(rgb))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + _png_chunk(b"IEND", b""))


def settled_screenshot(display: str, box: tuple[int, int, int, int],
                       timeout: float = START_WAIT) -> bytes:
    """A screenshot once the screen stopped changing (two grabs 0.2 s apart agree):
    Tk draws after the window's state says what it shows."""
    deadline = time.monotonic() + timeout
    last = screenshot(display, box)
    while True:
        select.select([], [], [], 0.2)
        now = screenshot(display, box)
        if now == last:
            return now
        if time.monotonic() > deadline:
            raise AssertionError("the screen kept changing")
        last = now
