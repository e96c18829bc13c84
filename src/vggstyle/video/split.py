"""How a clip is cut for many workers: shots at the cuts, long shots into chunks, and which chunk's
pass may start when (plain numbers only; spread.py runs it, chunk.py is one chunk's pass on a worker).

Why these rules:
- A shot is never shared across a chunk boundary it does not have: a cut already starts a frame
  afresh on one machine, so a chunk boundary there costs nothing and needs no seam.
- A long shot is cut into chunks of near-equal length (never a tail of two frames), each owning
  its frames. The first pass cannot follow the clip across every chunk at once, so it runs in two
  waves: the chunks at even places in their shot *lead* (the first frame a still, as after a
  cut), and each chunk at an odd place *follows* the chunk before once that one is done, starting
  from its last frames exactly as one machine would (so that seam is no seam, and it costs no
  still). Where a leading chunk meets the follower before it, two independent stylizations
  meet: the leader also stylizes ``overlap`` frames before its own (a warm-up), and those frames
  are cross-faded from the earlier chunk's result to this one's, so the seam is a fade over
  several frames instead of a jump. Two chains of frames drift apart within about 20 frames
  whatever their start, so the fade's length is what lowers the seam's cost (about 1/(k+1) of a
  jump over k frames; docs/video.md), not a longer settling before it.
- A leader after its shot's first chunk is *anchored*: its first frame starts from the shot's first
  still, warped to it along one flow, and takes ANCHORED_ITERATIONS instead of a still's. Two
  fresh stills meet as two unrelated textures, and the cross-fade between them is a ghost of both;
  an anchored leader descends from the same still as the chunks before it (half the difference
  where they meet, measured in docs/video.md). So a shot of three chunks or more starts with a
  chunk of one frame, its first still, which the anchored leaders wait for; a flow that cannot
  carry the still that far (a cut, or little of the frame consistent) gives a plain still instead.
- Pass p >= 2 of a chunk reads the boundary frames of its neighbours at pass p-1, so it may start
  once itself and both neighbours (in its shot) have finished pass p-1: the passes of different
  chunks overlap in time, and each later pass pulls a chunk's edge toward the other side of the
  seam as it does inside a shot. The order inside a chunk is the one-machine order restricted
  to the chunk's frames (``pass_order``), so a clip of one chunk is the one-machine run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

@dataclass(frozen=True)
class Chunk:
    """A run of frames of one shot: it owns ``first`` .. ``last``; in the first pass it starts
    ``warmup`` frames earlier (a leader after the first of its shot), or ``follows`` the chunk
    before, from its last frames."""

    number: int
    shot: tuple[int, int]  # the first and last frame of its shot
    first: int
    last: int
    warmup: int = 0
    follows: bool = False
    anchor: int | None = None  # a leader's: the frame whose output its first frame starts from

    @property
    def first_pass_frames(self) -> range:
        return range(self.first - self.warmup, self.last + 1)

    @property
    def owned(self) -> range:
        return range(self.first, self.last + 1)


def shots(starts: list[int], frames: int) -> list[tuple[int, int]]:
    """(first, last) of each shot, from the frames that start one (0 is always a start)."""
    edges = sorted({0, *(s for s in starts if 0 < s < frames)}) + [frames]
    return [(lo, hi - 1) for lo, hi in zip(edges, edges[1:])]


def plan_chunks(starts: list[int], frames: int, chunk_frames: int, overlap: int) -> list[Chunk]:
    """The chunks of a clip of ``frames`` frames whose shots start at ``starts``: each shot in
    ceil(length / chunk_frames) chunks of near-equal length, in order; a shot of three or more
    first gives its first frame a chunk of its own (the still the leaders after it are anchored on)."""
    chunks: list[Chunk] = []
    for lo, hi in shots(starts, frames):
        length = hi - lo + 1
        count = math.ceil(length / chunk_frames)
        anchored = count >= 3
        if anchored:
            chunks.append(Chunk(len(chunks), (lo, hi), lo, lo))
        start = lo + anchored
        bounds = [start + ((hi + 1 - start) * i) // count for i in range(count + 1)]
        for j, (a, b) in enumerate(zip(bounds, bounds[1:])):
            i = j + anchored  # the chunk's place in its shot
            follows = i % 2 == 1
            # a warm-up stays inside the chunk before and spares its first frame, which the chunk
            # before that reads once the chunk before is done (the cross-fade may come later)
            warmup = 0 if i == 0 or follows else min(overlap, a - bounds[j - 1] - 1)
            chunks.append(Chunk(len(chunks), (lo, hi), a, b - 1, warmup, follows,
                                lo if anchored and not follows else None))
    return chunks


def neighbours(chunks: list[Chunk], chunk: Chunk) -> list[Chunk]:
    """The chunks next to ``chunk`` in its shot (0, 1 or 2)."""
    return [c for c in (chunks[chunk.number - 1] if chunk.number > 0 else None,
                        chunks[chunk.number + 1] if chunk.number + 1 < len(chunks) else None)
            if c is not None and c.shot == chunk.shot]


def pass_order(shot_list: list[tuple[int, int]], number: int) -> list[tuple[int, int, int]]:
    """(frame, shot first, shot last) in the order pass ``number`` (2, 3, ...) revisits them: even
    passes backward, odd ones forward, shot by shot, each skipping the frame where the pass
    before ended (a shot's last frame going backward, its first going forward)."""
    backward = number % 2 == 0
    return [(t, lo, hi) for lo, hi in (reversed(shot_list) if backward else shot_list)
            for t in (range(hi - 1, lo - 1, -1) if backward else range(lo + 1, hi + 1))]


def chunk_order(chunk: Chunk, number: int) -> list[tuple[int, int, int]]:
    """Pass ``number`` of ``chunk``: the one-machine order of its shot, on the chunk's frames."""
    return [step for step in pass_order([chunk.shot], number) if chunk.first <= step[0] <= chunk.last]


def edge_frames(chunks: list[Chunk], chunk: Chunk) -> list[int]:
    """The frames of other chunks that pass p >= 2 of ``chunk`` reads (at pass p-1): the frame just
    outside each end, where a neighbour in its shot owns it."""
    return sorted(n.last if n.number < chunk.number else n.first for n in neighbours(chunks, chunk))


def boundary_frames(chunks: list[Chunk]) -> set[int]:
    """Frames a neighbour reads at an earlier pass: their file of each pass is kept until the end."""
    return {t for chunk in chunks for t in edge_frames(chunks, chunk)}


def crossfade(position: int, warmup: int) -> float:
    """The later chunk's share in warm-up frame ``position`` (0 .. warmup-1) of the first pass: from
    mostly the earlier chunk's result to mostly the later one's."""
    return (position + 1) / (warmup + 1)


def history(chunk: Chunk, depth: int) -> list[int]:
    """The frames a following chunk's first pass starts from: the last ``depth`` of the chunk
    before (what one machine's shot would hold at that point), oldest first."""
    return list(range(max(chunk.shot[0], chunk.first - depth), chunk.first)) if chunk.follows else []


def owner(chunks: list[Chunk], frame: int) -> Chunk:
    """The chunk that owns ``frame``."""
    return next(c for c in chunks if c.first <= frame <= c.last)


def ready(done: set[tuple[int, int]], chunks: list[Chunk], chunk: Chunk, number: int,
          written: set[int] = frozenset()) -> bool:
    """Whether pass ``number`` of ``chunk`` can start: pass 1 of a leader at once (an anchored one
    once its anchor's chunk has its first pass ``written``), of a follower once the chunk before
    has; pass p once the chunk and its neighbours in the shot have finished pass p-1 (and the
    cross-fades into them are written)."""
    if number == 1:
        if chunk.anchor is not None:
            return owner(chunks, chunk.anchor).number in written
        return not chunk.follows or chunk.number - 1 in written
    return all((c.number, number - 1) in done for c in [chunk, *neighbours(chunks, chunk)])
