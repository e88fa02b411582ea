"""Programs small enough to measure many schedules of (cost-model validation): every op type and chain of
`rl.programs`, at shapes where an unscheduled (scalar) run takes ≤ ~0.1 s on one core."""

from __future__ import annotations

from ..programs import (ProgramTable, batch_matmul, conv2d, elementwise, matmul, pooling, reduction,
                        stack_programs)


def validation_programs() -> ProgramTable:
    """12 programs: matmul chains, attention batch matmuls, 3×3 / strided / 1×1 convs, pooling, reductions."""
    return stack_programs([
        ("v_qkv_128x256x128", [matmul(128, 256, 128), elementwise(128, 256, "bias_add")]),
        ("v_ffn1_64x512x256", [matmul(64, 512, 256), elementwise(64, 512, "bias_gelu")]),
        ("v_ffn2_128x128x512", [matmul(128, 128, 512), elementwise(128, 128, "bias_add"),
                                elementwise(128, 128, "residual_add")]),
        ("v_scores_12x64", [batch_matmul(12, 64, 64, 64, transpose_b=True), reduction(768, 64, with_exp=True)]),
        ("v_context_12x64", [batch_matmul(12, 64, 64, 64)]),
        ("v_conv3x3_14x64", [conv2d(14, 14, 64, 3, 3, 64), elementwise(196, 64, "relu")]),
        ("v_conv3x3s2_28x32", [conv2d(14, 14, 64, 3, 3, 32, 2), elementwise(196, 64, "relu")]),
        ("v_conv1x1_28x64", [conv2d(28, 28, 128, 1, 1, 64), elementwise(784, 128, "relu")]),
        ("v_pool_28x64", [pooling(14, 14, 64, 3, 2)]),
        ("v_gap_1024x49", [reduction(1024, 49)]),
        ("v_gelu_256x512", [elementwise(256, 512, "bias_gelu")]),
        ("v_mm_256x64x64", [matmul(256, 64, 64)]),
    ])
