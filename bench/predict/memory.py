"""Model state per rank (params + grads + AdamW states) for each layout, from parameter shapes.

Counted as commbench measures it (`model_state_bytes_per_rank`, bench/trackers/memory.py):
fp32 weights (4 B), fp32 grads (4 B), AdamW's exp_avg and exp_avg_sq (8 B) per element, and
AdamW's float32 `step` (4 B) per parameter tensor. Mixed precision with fp32 master weights
(bf16 weights 2 + bf16 grads 2 + master 4 + moments 8) holds the same 16 B per element.

    ddp        16 Psi + 4 P                        every rank holds everything
    zero1      8 Psi + 8 Psi'/N + 4 P              moments sharded (textbook; not a commbench layout)
    zero2      4 Psi + 12 Psi'/N + 4 P             grads and moments sharded (textbook)
    zero3      16 Psi'/N + 4 P                     FSDP2: everything sharded; Psi' pads dim 0 to a multiple of N
    tp(t)      16 (Psi_blocks/t + Psi_rest) + 4 P  block matrices split t ways (Megatron), the rest replicated
    pp(p)      16 Psi_stage + 4 P_stage            the heaviest stage: ceil(L/p) blocks plus the embedding

Psi: elements, P: parameter tensors, N: the data-parallel (sharding) degree. ddp and zero3 are
exact against measured rows; zero1, zero2, tp and pp are the formulas, not validated here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.comm.cost_model import fsdp_padded_numel
from bench.predict.shapes import ModelShape, Shape, parameter_shapes

ELEMENT_STATE = 16  # fp32 weight + grad + two AdamW moments, bytes per element
STEP_BYTES = 4  # AdamW's float32 step counter, bytes per parameter tensor


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Degrees of one parallel layout: data parallel with a ZeRO stage (0 = DDP), tensor and pipeline.

    A tp or pp of 0 stands for "as wide as the cluster allows" (`advise` fills it in).
    """

    name: str
    zero: int = 0
    tp: int = 1
    pp: int = 1

    def __post_init__(self) -> None:
        if self.zero not in (0, 1, 2, 3) or self.tp < 0 or self.pp < 0:
            raise ValueError(f"layout {self.name}: zero must be 0-3 and tp, pp >= 0")


def _elements(shapes: list[Shape]) -> int:
    return sum(math.prod(s) for s in shapes)


def _is_block_matrix(shape: Shape, m: ModelShape) -> bool:
    return len(shape) == 2 and m.vocab not in shape and m.positions not in shape


# Where the repeated blocks sit in `parameter_shapes`: (first block's index, tensors per block).
_BLOCKS = {"gpt2": (2, 12), "llama": (1, 9), "bert": (5, 16)}


def _split_blocks(m: ModelShape, shapes: list[Shape]) -> tuple[list[Shape], list[Shape]]:
    """(one block's shapes, every shape outside the blocks)."""
    off, per = _BLOCKS[m.family]
    return shapes[off : off + per], shapes[:off] + shapes[off + per * m.layers :]


def _pipeline_stage(m: ModelShape, shapes: list[Shape], pp: int) -> list[Shape]:
    """The heaviest stage's parameters: ceil(layers / pp) blocks plus everything outside the blocks."""
    block, outside = _split_blocks(m, shapes)
    return outside + block * math.ceil(m.layers / pp)


def model_state_bytes(m: ModelShape, layout: Layout, world: int) -> int:
    """Bytes of model state the most loaded rank holds under `layout` on `world` ranks."""
    shapes = parameter_shapes(m)
    if layout.pp > 1:
        shapes = _pipeline_stage(m, shapes, layout.pp)
    if layout.tp > 1:
        split = [s for s in shapes if _is_block_matrix(s, m)]
        rest = [s for s in shapes if not _is_block_matrix(s, m)]
        psi = math.ceil(_elements(split) / layout.tp) + _elements(rest)
    else:
        psi = _elements(shapes)
    n = max(1, world // (layout.tp * layout.pp))
    tensors = len(shapes)
    if layout.zero == 3 and layout.tp == 1:
        return ELEMENT_STATE * sum(fsdp_padded_numel(s, n) for s in shapes) // n + STEP_BYTES * tensors
    sharded = {0: 0, 1: 8, 2: 12, 3: 16}[layout.zero]
    return (ELEMENT_STATE - sharded) * psi + math.ceil(sharded * psi / n) + STEP_BYTES * tensors
