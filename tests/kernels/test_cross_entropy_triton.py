"""The Triton kernels compile for an H100 (sm_90) — checked on a CPU machine, ahead of time.

The interpreter accepts code that the GPU compiler rejects (a branch that changes a variable's type got
through once), so CI compiles the real kernels to a cubin with Triton's bundled ptxas, specialised as the JIT
would specialise them on aligned tensors (which decides whether the D loop is software-pipelined), and checks
what makes the default tiles viable: no register spills and shared memory within Hopper's 227 KiB per block.
It runs in a subprocess because the interpreter (TRITON_INTERPRET=1, set by conftest) replaces the JIT functions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

triton = pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import os, re, subprocess, tempfile
    import torch, triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import srlm_kernels.cross_entropy_triton as t

    from triton.backends.nvidia.compiler import get_ptxas
    PTXAS = get_ptxas(90).path  # the ptxas Triton itself uses for sm_90 (which one depends on its version)
    DTYPE = {"bf16": torch.bfloat16, "fp32": torch.float32}
    target = GPUTarget("cuda", 90, 32)
    # What the JIT specialises at a real call on aligned tensors (a stride of 4096, V = 128256): pointers and
    # these integers divisible by 16. It decides whether the D loop is pipelined (cp.async), hence the kernel's
    # registers and shared memory.
    DIVISIBLE = {"N", "V", "D", "v_per_split", "v_start", "stride_hn", "stride_wv"}
    for dt in ("bf16", "fp32"):
        bn, bv, bd, warps = t._gpu_blocks(4096, 128256, 4096, DTYPE[dt])
        ptr, prec = f"*{dt}", t._dot_precision(DTYPE[dt])
        scalars = {"N": "i32", "V": "i32", "D": "i32", "v_per_split": "i32", "v_start": "i32",
                   "stride_hn": "i32", "stride_wv": "i32", "softcap": "fp32", "inv_temp": "fp32",
                   "z_loss2": "fp32", "target_weight": "fp32", "uniform_weight": "fp32", "filter_eps": "fp32"}
        flags = {"stride_hd": 1, "stride_wd": 1, "HAS_BIAS": True, "HAS_SOFTCAP": True, "NEED_SUM": True,
                 "COMPUTE_DH": True, "COMPUTE_DW": True, "COMPUTE_DB": True, "FILTER": True,
                 "BLOCK_N": bn, "BLOCK_V": bv, "BLOCK_D": bd, "DOT_PRECISION": prec}
        # the backward's variants: one pass (all), low_memory's vocabulary pass (no dh) and row pass (dh only)
        bwd = [{}, {"COMPUTE_DH": False}, {"COMPUTE_DW": False, "COMPUTE_DB": False}]
        for kernel, variant in [(t._lce_fwd_kernel, {})] + [(t._lce_bwd_kernel, v) for v in bwd]:
            sig, consts, flags_v = {}, {}, {**flags, **variant}
            for name in kernel.arg_names:
                if name in flags_v:
                    sig[name], consts[name] = "constexpr", flags_v[name]
                elif name in scalars:
                    sig[name] = scalars[name]
                elif name == "Y":
                    sig[name] = "*i32"
                else:
                    sig[name] = ptr if name in ("H", "W", "B") else "*fp32"
            attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names)
                     if name in DIVISIBLE or sig[name].startswith("*")}
            k = triton.compile(ASTSource(kernel, sig, consts, attrs), target=target,
                               options={"num_warps": warps, "num_stages": 3})
            assert k.asm.get("cubin"), kernel.__name__
            # Registers and spills: the bundled ptxas again, verbose, on the same PTX.
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "k.ptx"), "w") as f:
                    f.write(k.asm["ptx"])
                out = subprocess.run([PTXAS, "-v", "--gpu-name", "sm_90a", os.path.join(d, "k.ptx"),
                                      "-o", os.path.join(d, "k.cubin")], capture_output=True, text=True)
            spills = [int(x) for x in re.findall(r"(\\d+) bytes spill stores", out.stderr)]
            regs = [int(x) for x in re.findall(r"Used (\\d+) registers", out.stderr)]
            print("compiled", kernel.__name__, dt, variant, (bn, bv, bd, warps), "shared", k.metadata.shared,
                  "registers", regs, "spills", spills, flush=True)
            assert out.returncode == 0 and spills == [0], out.stderr[-2000:]
            assert k.metadata.shared <= 227 * 1024, k.metadata.shared  # Hopper's shared memory per block
    """
)


def test_kernels_compile_for_sm90():
    from triton.backends import backends

    if "nvidia" not in backends:
        pytest.skip("Triton's NVIDIA backend (with its bundled ptxas) is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("compiled") == 8, out.stdout
