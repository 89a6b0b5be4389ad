"""A camera's zones and lines, and where a tracked object's anchor point is against them.

Everything is computed on RELATIVE points: a box's pixels divided by its frame's width and height, so that x runs
0-1 to the right and y 0-1 downwards, as the zones and lines are configured.

Zones: a point is in a zone when it is inside the zone's polygon (ray casting, any simple polygon, concave too; a
point exactly on an edge may go either way, always the same way for the same point). A zone with ``labels`` only
takes objects of those labels.

Lines: for a line from its first point A to its second point B, the LEFT side is where A->B points after a quarter
turn counter-clockwise as seen on the screen (y down): for a line drawn left to right, the side above it (smaller
y); for a line drawn top to bottom, the side right of it (larger x). In numbers, with
``cross = (Bx - Ax) * (Py - Ay) - (By - Ay) * (Px - Ax)``, P is on the left when ``cross < 0``, on the right when
``cross > 0``, and on the line when ``cross == 0``. Moving onto the left side is ``in``, onto the right side ``out``.

A crossing is a move from one side to the other through the segment A-B itself (not its extension):

- between two consecutive points strictly on opposite sides, the segment between them must properly cross A-B;
  passing exactly through A or B (grazing an end) is not a crossing;
- a point exactly on the line belongs to neither side: arriving on it is no crossing; leaving it onto the side the
  object came from is none either (an object that stops on the line and goes back is never counted); leaving it
  onto the other side is one crossing, when the point it left from lies strictly between A and B. That needs the
  side of each line the object was last on: the ``sides`` memory (:meth:`Areas.sides`) that
  :meth:`Areas.crossings` keeps up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.geometry import inside  # the alert rules' ray casting: the same zone semantics everywhere
from common.wire import Box
from sink.tracker import CameraAreas

Point = tuple[float, float]
Direction = Literal["in", "out"]
Anchor = Literal["bottom_center", "center"]
LEFT, RIGHT = -1, 1  # the sign of ``cross`` (see the module docstring); 0 is on the line


@dataclass(frozen=True)
class Zone:
    """A configured zone, ready for point tests."""

    name: str
    polygon: tuple[Point, ...]
    bounds: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax: most points are rejected on this alone
    loiter_s: float | None
    labels: frozenset[str]


@dataclass(frozen=True)
class Line:
    """A configured line, ready for side and crossing tests."""

    index: int  # position in the camera's lines: the slot of the ``sides`` memory
    name: str
    ax: float
    ay: float
    bx: float
    by: float
    dx: float  # B - A
    dy: float
    length2: float
    labels: frozenset[str]

    def side(self, x: float, y: float) -> int:
        """LEFT, RIGHT, or 0 on the (infinite) line."""
        cross = self.dx * (y - self.ay) - self.dy * (x - self.ax)
        return RIGHT if cross > 0 else LEFT if cross < 0 else 0

    def properly_crossed_by(self, p: Point, q: Point) -> bool:
        """A and B lie strictly on opposite sides of the line through p and q (p, q already on opposite sides)."""
        ex, ey = q[0] - p[0], q[1] - p[1]
        a = ex * (self.ay - p[1]) - ey * (self.ax - p[0])
        b = ex * (self.by - p[1]) - ey * (self.bx - p[0])
        return (a < 0 < b) or (b < 0 < a)

    def strictly_within(self, p: Point) -> bool:
        """p (on the line) lies between A and B, ends excluded."""
        t = ((p[0] - self.ax) * self.dx + (p[1] - self.ay) * self.dy) / self.length2
        return 0 < t < 1


class Areas:
    """The zones and lines of one camera, with the anchor point that stands for a box."""

    def __init__(self, areas: CameraAreas, anchor: Anchor) -> None:
        self.anchor_kind: Anchor = anchor
        self.zones = tuple(
            Zone(
                name=z.name,
                polygon=tuple(z.polygon),
                bounds=(
                    min(p[0] for p in z.polygon),
                    min(p[1] for p in z.polygon),
                    max(p[0] for p in z.polygon),
                    max(p[1] for p in z.polygon),
                ),
                loiter_s=z.loiter_s,
                labels=frozenset(z.labels),
            )
            for z in areas.zones
        )
        self.lines = tuple(
            Line(
                i, line.name, ax, ay, bx, by, bx - ax, by - ay, (bx - ax) ** 2 + (by - ay) ** 2, frozenset(line.labels)
            )
            for i, line in enumerate(areas.lines)
            for (ax, ay), (bx, by) in [line.points]
        )
        # Per label, the zones and lines that take it: worked out once per label, not per object and frame.
        self._zones_for: dict[str, tuple[Zone, ...]] = {}
        self._lines_for: dict[str, tuple[Line, ...]] = {}

    def anchor(self, box: Box, width: int, height: int) -> Point:
        """The relative point of a box (pixels of a width x height frame) that is in zones and crosses lines."""
        x1, y1, x2, y2 = box
        if self.anchor_kind == "bottom_center":
            return ((x1 + x2) / 2 / width, y2 / height)
        return ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height)

    def zones_for(self, label: str) -> tuple[Zone, ...]:
        """The zones that take objects of ``label``, in configuration order."""
        found = self._zones_for.get(label)
        if found is None:
            found = self._zones_for[label] = tuple(z for z in self.zones if not z.labels or label in z.labels)
        return found

    def lines_for(self, label: str) -> tuple[Line, ...]:
        """The lines that count objects of ``label``, in configuration order."""
        found = self._lines_for.get(label)
        if found is None:
            found = self._lines_for[label] = tuple(li for li in self.lines if not li.labels or label in li.labels)
        return found

    def zones_of(self, point: Point, label: str) -> list[str]:
        """Names of the zones (configuration order) that ``point`` is in, among those taking ``label``."""
        x, y = point
        return [
            z.name
            for z in self.zones_for(label)
            if z.bounds[0] <= x <= z.bounds[2] and z.bounds[1] <= y <= z.bounds[3] and inside(point, z.polygon)
        ]

    def sides(self, point: Point, label: str) -> list[int]:
        """A new ``sides`` memory for an object first seen at ``point``: per line (configuration order), the side
        (-1 left, 1 right) it is on, 0 when it is on the line or the line does not count its label."""
        memory = [0] * len(self.lines)
        for line in self.lines_for(label):
            memory[line.index] = line.side(*point)
        return memory

    def crossings(
        self, previous: Point, point: Point, label: str, sides: list[int] | None = None
    ) -> list[tuple[str, Direction]]:
        """The lines (configuration order) that counting ``label`` the move previous -> point crosses, with the
        direction: ``in`` onto the left side, ``out`` onto the right.

        ``sides`` (from :meth:`sides`, updated here) remembers the side each line was last left on, so that a stop
        exactly on a line is one crossing when the object goes on and none when it goes back. Without it, a move
        from or to a point exactly on a line never crosses it.
        """
        found: list[tuple[str, Direction]] = []
        x, y = point
        for line in self.lines_for(label):
            now = line.side(x, y)
            if now == 0:
                continue  # on the line: undecided until it leaves
            if sides is None:
                if line.side(*previous) in (0, now):
                    continue
                through = line.properly_crossed_by(previous, point)
            else:
                came_from = sides[line.index]
                if came_from == now:
                    continue  # the usual case: still on the side it was last on
                sides[line.index] = now
                if came_from == 0:
                    continue  # never off the line before: it came from no side
                # From the other side: straight across, or off the line where it stopped.
                on_line = line.side(*previous) == 0
                through = line.strictly_within(previous) if on_line else line.properly_crossed_by(previous, point)
            if through:
                found.append((line.name, "in" if now == LEFT else "out"))
        return found
