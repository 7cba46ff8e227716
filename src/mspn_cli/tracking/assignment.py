"""Minimum-cost matching of tracks to poses (Hungarian method, shortest augmenting paths).

scipy is not a dependency, and the matrices are small (people in a frame), so this is
the compact O(n^2 m) potentials formulation of Kuhn-Munkres, with the inner loop over
columns in numpy. Greedy matching would be simpler but can pair a track with a pose
that a neighbour fits far better when people cross; the optimal matching cannot.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

# Stands in for "not allowed" inside the solver; real costs lie in [0, 1].
_FORBIDDEN = 1.0e6


def linear_assignment(cost: np.ndarray) -> List[Tuple[int, int]]:
    """A matching of min(rows, cols) pairs (row, col) with the least total cost, sorted by row."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.size == 0:
        return []
    if cost.shape[0] > cost.shape[1]:
        return sorted((row, col) for col, row in _assign_rows(cost.T))
    return sorted(_assign_rows(cost))


def match_with_threshold(cost: np.ndarray, threshold: float) -> Tuple[List[Tuple[int, int]], List[int], List[int]]:
    """Optimal matching among pairs with cost <= threshold: (pairs, unmatched rows, unmatched cols)."""
    cost = np.asarray(cost, dtype=np.float64)
    rows, cols = cost.shape
    allowed = np.isfinite(cost) & (cost <= threshold)
    pairs = [(r, c) for r, c in linear_assignment(np.where(allowed, cost, _FORBIDDEN)) if allowed[r, c]]
    matched_rows = {r for r, _ in pairs}
    matched_cols = {c for _, c in pairs}
    return pairs, [r for r in range(rows) if r not in matched_rows], [c for c in range(cols) if c not in matched_cols]


def _assign_rows(cost: np.ndarray) -> List[Tuple[int, int]]:
    """Kuhn-Munkres for rows <= cols; every row gets a column. Index 0 is the virtual start."""
    rows, cols = cost.shape
    row_potential = np.zeros(rows + 1)
    col_potential = np.zeros(cols + 1)
    row_of_col = np.zeros(cols + 1, dtype=np.int64)  # 1-based row matched to each column, 0 = free
    previous_col = np.zeros(cols + 1, dtype=np.int64)
    for row in range(1, rows + 1):
        row_of_col[0] = row
        col = 0
        slack = np.full(cols + 1, np.inf)
        visited = np.zeros(cols + 1, dtype=bool)
        while True:
            visited[col] = True
            current_row = row_of_col[col]
            reduced = cost[current_row - 1] - row_potential[current_row] - col_potential[1:]
            open_cols = ~visited[1:]
            improves = open_cols & (reduced < slack[1:])
            slack[1:][improves] = reduced[improves]
            previous_col[1:][improves] = col
            candidates = np.where(open_cols, slack[1:], np.inf)
            next_col = int(np.argmin(candidates)) + 1  # the first minimum: ties break by index
            delta = candidates[next_col - 1]
            row_potential[row_of_col[visited]] += delta
            col_potential[visited] -= delta
            slack[~visited] -= delta
            col = next_col
            if row_of_col[col] == 0:
                break
        while col != 0:  # flip the augmenting path back to the start
            prior = previous_col[col]
            row_of_col[col] = row_of_col[prior]
            col = prior
    return [(int(row_of_col[c]) - 1, c - 1) for c in range(1, cols + 1) if row_of_col[c] != 0]
