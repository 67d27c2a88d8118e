"""Print this CPU, what torch makes of it, and whether its bf16 matmuls are native.

Native means one bf16 matmul (512x576 by 576x1536, one thread) takes under 4x its fp32 time. An
Intel Xeon with AVX512-BF16 or AMX runs it at about fp32's speed; an AVX2-only CPU (an AMD EPYC
Zen 3, say) emulates it about 50x slower. Timing it also honours ONEDNN_MAX_CPU_ISA=AVX2 and
ATEN_CPU_CAPABILITY=avx2, which make a native CPU behave like the other kind. The last line is
``native_bf16=yes`` or ``native_bf16=no``, for ``.ci/gpu-profile``.
"""

import os
import re
import time
from pathlib import Path

import torch


def cpu_model_and_flags() -> tuple[str, set[str]]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return (model.group(1) if model else "unknown"), set(flags.group(1).split() if flags else ())


def matmul_ms(dtype: torch.dtype, repeats: int = 3) -> float:
    a, b = torch.randn(512, 576).to(dtype), torch.randn(576, 1536).to(dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - start) / repeats * 1000


torch.set_num_threads(1)
model, flags = cpu_model_and_flags()
bf16_flags = sorted(flags & {"avx512_bf16", "amx_bf16"}) or ["none"]
fp32, bf16 = matmul_ms(torch.float32), matmul_ms(torch.bfloat16)
limits = {name: os.environ[name] for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if name in os.environ}
capability = torch.backends.cpu.get_cpu_capability()
print(f"CPU: {model} ({os.cpu_count()} cores); torch {torch.__version__}, capability {capability}")
print(f"bf16 flags: {', '.join(bf16_flags)}; ISA limits: {limits or 'none'}")
print(f"one 512x576x1536 matmul, one thread: fp32 {fp32:.1f} ms, bf16 {bf16:.1f} ms ({bf16 / fp32:.1f}x)")
print(f"native_bf16={'yes' if bf16 < 4 * fp32 else 'no'}")
