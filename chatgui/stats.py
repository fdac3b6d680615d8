"""Event-loop turn times, so ``--stats`` can show the window stays responsive."""

from __future__ import annotations

from typing import Any


class Stats:
    """Event-loop turn times, to show the window stays responsive (``--stats``).

    A *turn* runs from one ``read`` return to the next: our work (polling and
    rendering) plus what Tk does inside ``read`` (layout, redraw), without an
    idle wait. Wall time counts time the OS gave to other processes too, so the
    process CPU time of each turn is kept as well: on a shared machine that is
    the figure that says what the window itself costs.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.busy_turns = 0

    def record(self, wall: float, cpu: float, busy: bool) -> None:
        if len(self.wall) < 1_000_000:  # bounded memory (16 MB); later turns are not kept
            self.wall.append(wall)
            self.cpu.append(cpu)
        self.busy_turns += busy

    @staticmethod
    def _summary(values: list[float], prefix: str) -> dict[str, float]:
        if not values:
            return {}
        ordered = sorted(values)

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

        return {f"{prefix}_p50_ms": pick(0.5), f"{prefix}_p99_ms": pick(0.99),
                f"{prefix}_max_ms": round(ordered[-1] * 1000, 1),
                f"{prefix}_over_100ms": sum(v > 0.1 for v in values)}

    def as_dict(self) -> dict[str, Any]:
        return {"turns": len(self.wall), "busy_turns": self.busy_turns,
                **self._summary(self.wall, "turn"), **self._summary(self.cpu, "cpu")}

