#!/usr/bin/env python3
"""Writes the hand-made seeds of the cache-manager service corpus (scripts that open sessions and drive
them the way a worker would, plus a few hostile ones); libFuzzer grows the corpus from them."""
import os

OPEN, SUBMIT, RING, GET, CLOSE, SWAP, LIST = 0, 1, 3, 4, 5, 6, 7
NATURAL = 0xFF  # every field as a well-behaved worker would send it


def open_session(policy=0, layers=2, heads=2, budget=4, lag=0, label=b"w/1", alpha=60):
    return bytes([OPEN, layers, heads, 1, 0, 1, policy, 1 if alpha is not None else 0] +
                 ([alpha] if alpha is not None else []) + [2, budget, len(label) % 256, len(label) // 256]) + label + bytes([lag])


def step(op=SUBMIT, mode=NATURAL):
    return bytes([op, 0, mode])


seeds = {
    "seed-a2sf-steps": open_session() + step() * 8 + bytes([GET, 0, 1, CLOSE, 0, 1]),
    "seed-ring-steps": open_session(policy=3, alpha=None) + step(RING) * 6,
    "seed-pipelined": open_session(lag=2) + step() * 8,
    "seed-full-swap": open_session(policy=2, alpha=None) + step() * 3 + bytes([SWAP, 0, 0, 0, LIST]),
    "seed-huge-shape": bytes([OPEN, 250, 0, 0, 4, 250, 0, 0, 4, 1, 0, 0, 0, 2, 8, 0, 0, 0]),
    "seed-hostile-steps": open_session() + step(mode=0) * 4 + step(RING, mode=0) * 2,
    "seed-label-utf8": open_session(label=b"x" * 255 + "\u20ac".encode() * 10) + bytes([LIST]),
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")
