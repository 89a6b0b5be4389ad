"""Plane geometry on relative frame coordinates (0-1, x right, y down), shared by the alert rules' zones and the
tracker's zones."""

from __future__ import annotations

from collections.abc import Sequence

Point = tuple[float, float]


def inside(point: Point, polygon: Sequence[Point]) -> bool:
    """Ray casting: True when ``point`` is inside ``polygon`` (any simple polygon, concave too).

    A point exactly on an edge may go either way (always the same way for the same point).
    """
    x, y = point
    result = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        # Count crossings of a ray going right from the point; the half-open test counts a shared vertex once.
        if (yi > y) != (yj > y) and x < xi + (y - yi) * (xj - xi) / (yj - yi):
            result = not result
        j = i
    return result
