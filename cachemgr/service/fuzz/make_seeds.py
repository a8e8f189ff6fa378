#!/usr/bin/env python3
"""Writes the hand-made seeds of the cache-manager service corpus (scripts that open sessions and drive
them the way a worker would, plus a few hostile ones); libFuzzer grows the corpus from them."""
import os

OPEN, SUBMIT, RING, GET, CLOSE, SWAP, LIST = 0, 1, 3, 4, 5, 6, 7
BATCH = 0xE0  # from here up an operation byte sends a ScoreBatch
NATURAL = 0xFF  # every field as a well-behaved worker would send it


def open_session(policy=0, layers=2, heads=2, budget=4, lag=0, label=b"w/1", alpha=60, opened=0):
    # Once a session is open, every operation byte is followed by one that picks a session.
    return bytes([OPEN] + [0] * min(opened, 1) + [layers, heads, 1, 0, 1, policy, 1 if alpha is not None else 0] +
                 ([alpha] if alpha is not None else []) + [2, budget, len(label) % 256, len(label) // 256]) + label + bytes([lag])


def step(op=SUBMIT, mode=NATURAL):
    return bytes([op, 0, mode])


def batch_step(pick, entries, mode=0x7F, twist=0, stranger=b""):
    """One step of a batch for the 2x2 session `pick` holding `entries` entries: mode 0x7F is the natural
    fp32 step (its data reads one script byte in seven); without bit 0 a wrong secret follows; pick 0xF0
    and up names `stranger` instead of a session."""
    out = bytes([pick])
    if pick >= 0xF0:
        out += bytes([len(stranger), 0]) + stranger
    out += bytes([mode])
    if not mode & 1:
        out += bytes([5, 0]) + b"wrong"
    data_bytes = 16 * (entries + 1)
    return out + bytes([0x3C] * ((data_bytes + 6) // 7)) + bytes([twist])


def batch(steps, size=None):
    """A ScoreBatch operation (the byte after BATCH picks a session for the other calls and is unused)."""
    return bytes([BATCH, 0, len(steps) if size is None else size]) + b"".join(steps)


seeds = {
    "seed-a2sf-steps": open_session() + step() * 8 + bytes([GET, 0, 1, CLOSE, 0, 1]),
    "seed-ring-steps": open_session(policy=3, alpha=None) + step(RING) * 6,
    "seed-pipelined": open_session(lag=2) + step() * 8,
    "seed-full-swap": open_session(policy=2, alpha=None) + step() * 3 + bytes([SWAP, 0, 0, 0, LIST]),
    "seed-huge-shape": bytes([OPEN, 250, 0, 0, 4, 250, 0, 0, 4, 1, 0, 0, 0, 2, 8, 0, 0, 0]),
    "seed-hostile-steps": open_session() + step(mode=0) * 4 + step(RING, mode=0) * 2,
    "seed-label-utf8": open_session(label=b"x" * 255 + "\u20ac".encode() * 10) + bytes([LIST]),
    # Three sessions stepped together, three worker steps in a row.
    "seed-batch-steps": open_session(0) + open_session(1, opened=1) + open_session(3, alpha=None, opened=2) +
    b"".join(batch([batch_step(i, e) for i in range(3)]) for e in range(3)),
    # One batch with everything a hostile or confused worker could send: a session twice, a wrong
    # secret, an unknown id, no scores (a header-only step), no session id, another session's id.
    "seed-batch-hostile": open_session(0) + open_session(1, opened=1) + batch([
        batch_step(0, 0), batch_step(0, 0), batch_step(1, 0, mode=0x7E), batch_step(0xF0, 0, stranger=b"s-nobody"),
        batch_step(1, 0, twist=4), batch_step(0, 0, twist=7), batch_step(1, 0, twist=6), batch_step(1, 0, twist=5)]),
    # Batch sizes about the limit: 4095 steps served (the script's end makes all but the first empty),
    # 4099 refused. (A batch's steps read the rest of the script, so each gets a seed of its own.)
    "seed-batch-at-limit": open_session(0) + batch([batch_step(0, 0)], size=0xFB),
    "seed-batch-over-limit": open_session(0) + batch([batch_step(0, 0)], size=0xFF),
    # Hundreds of steps.
    "seed-batch-many": open_session(0) + bytes([BATCH, 0, 0xF0, 0x2C, 0x01, 0, 0]) + batch_step(0, 0) * 2,
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")
