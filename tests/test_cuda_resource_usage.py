"""The CUDA kernels' register and spill budget on sm_90 (scripts/cuda_resource_usage.py).

With nvcc on PATH (CI has it; no GPU needed) every csrc/cuda/*.cu is compiled for
sm_90 with `-Xptxas -v` and the build's flags (~15 s on 2 cores): no kernel
instantiation may spill, none may use more registers than its __launch_bounds__
allow, and docs/cuda_resource_usage_sm90.md must match what ptxas reports. The
parser, the register rule and the staleness check are tested first on fixed
samples written in ptxas's and PTX's format, which needs no compiler.
"""
import ast
import importlib.util
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("cuda_resource_usage", os.path.join(ROOT, "scripts",
                                                                                   "cuda_resource_usage.py"))
cru = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cru)

# ---- fixed samples ------------------------------------------------------------

# Written in the format of nvcc 13.0's `-Xptxas -v` (sm_90): one clean kernel, one that
# spills, one over its register limit (72 > 64 for 1024 threads) with shared memory, and a
# non-inlined device function that spills.
CLEAN = "_ZN4ottt3gpu18elementwise_kernelINS0_7TraceOpIfEELi4EEEvT_l"
SPILLS = "_ZN4ottt3gpu24lif_multistep_bwd_kernelIfEEvNS0_19LifMultistepBwdArgsIT_EE"
TOO_MANY = "_Z9wide_kernPf"
HELPER = "_Z6helperf"
PTXAS_SAMPLE = f"""\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '{CLEAN}' for 'sm_90'
ptxas info    : Function properties for {CLEAN}
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, used 0 barriers
ptxas info    : Compile time = 21.850 ms
ptxas info    : Compiling entry function '{SPILLS}' for 'sm_90'
ptxas info    : Function properties for {SPILLS}
    8 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 8 bytes cumulative stack size
ptxas info    : Compile time = 9.113 ms
ptxas info    : Compiling entry function '{TOO_MANY}' for 'sm_90'
ptxas info    : Function properties for {TOO_MANY}
    256 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 72 registers, used 1 barriers, 256 bytes cumulative stack size, 4096 bytes smem
ptxas info    : Compile time = 5.889 ms
ptxas info    : Function properties for {HELPER}
    40 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
"""

PTX_SAMPLE = f"""\
.visible .entry {CLEAN}(
\t.param .align 8 .b8 {CLEAN}_param_0[32],
\t.param .u64 {CLEAN}_param_1
)
.maxntid 256, 1, 1
{{
\tret;
}}
.func  (.param .b32 func_retval0) {HELPER}(
\t.param .b32 {HELPER}_param_0
)
{{
\tret;
}}
.entry {SPILLS}(
\t.param .align 8 .b8 {SPILLS}_param_0[96]
)
.maxntid 32, 4, 1
.minnctapersm 2
{{
\tret;
}}
.visible .entry {TOO_MANY}(
\t.param .u64 {TOO_MANY}_param_0
)
{{
\tret;
}}
"""


def _sample_rows():
    usage = cru.parse_ptxas(PTXAS_SAMPLE)
    bounds = cru.parse_ptx_bounds(PTX_SAMPLE)
    return [cru.Row("sample.cu", name, name, usage[name], bounds.get(name, cru.Bounds()))
            for name in (CLEAN, SPILLS, TOO_MANY, HELPER)]


def test_parse_ptxas_sample():
    u = cru.parse_ptxas(PTXAS_SAMPLE)
    assert set(u) == {CLEAN, SPILLS, TOO_MANY, HELPER}
    assert (u[CLEAN].entry, u[CLEAN].arch, u[CLEAN].registers, u[CLEAN].spill_stores, u[CLEAN].spill_loads,
            u[CLEAN].stack, u[CLEAN].smem) == (True, "sm_90", 30, 0, 0, 0, 0)
    assert (u[SPILLS].registers, u[SPILLS].stack, u[SPILLS].spill_stores, u[SPILLS].spill_loads) == (32, 8, 16, 12)
    assert (u[TOO_MANY].registers, u[TOO_MANY].barriers, u[TOO_MANY].smem, u[TOO_MANY].stack) == (72, 1, 4096, 256)
    assert not u[HELPER].entry
    assert (u[HELPER].stack, u[HELPER].spill_stores, u[HELPER].spill_loads) == (40, 4, 4)


def test_parse_ptx_bounds_sample():
    b = cru.parse_ptx_bounds(PTX_SAMPLE)
    assert set(b) == {CLEAN, SPILLS, TOO_MANY}  # the .func is no entry
    assert (b[CLEAN].threads, b[CLEAN].min_blocks, b[CLEAN].declared) == (256, 1, True)
    assert (b[SPILLS].threads, b[SPILLS].min_blocks) == (128, 2)  # 32 x 4 x 1 threads
    assert (b[TOO_MANY].threads, b[TOO_MANY].declared) == (1024, False)  # no bound: the largest block


@pytest.mark.parametrize("threads, min_blocks, maxnreg, limit", [
    (256, 1, 0, 255),  # 65536 // 256 = 256, capped at 255
    (128, 1, 0, 255),
    (1024, 1, 0, 64),
    (768, 1, 0, 80),  # 85, rounded down to a multiple of 8
    (1000, 1, 0, 64),  # 65
    (256, 2, 0, 128),
    (128, 2, 0, 255),
    (256, 1, 40, 40),
])
def test_register_limit(threads, min_blocks, maxnreg, limit):
    assert cru.register_limit(threads, min_blocks, maxnreg) == limit


def test_offenders_sample():
    rows = _sample_rows()
    bad = cru.offenders(rows)
    assert len(bad) == 3, bad
    assert any(SPILLS in m and "16 B stores, 12 B loads" in m for m in bad)
    assert any(TOO_MANY in m and "72 registers > 64" in m for m in bad)
    assert any(HELPER in m and "spills" in m for m in bad)
    assert not any(CLEAN in m for m in bad)
    assert cru.offenders(rows[:1]) == []


def test_readable_name():
    assert cru.readable_name(
        "void ottt::gpu::elementwise_kernel<ottt::gpu::(anonymous namespace)::TraceOp<c10::BFloat16>, 8>"
        "(ottt::gpu::(anonymous namespace)::TraceOp<c10::BFloat16>, long)") == "elementwise_kernel<TraceOp<c10::BFloat16>, 8>"
    assert cru.readable_name("void ottt::gpu::(anonymous namespace)::outer_small_kernel<float, c10::Half>"
                             "(float*, c10::Half const*, c10::Half const*, long, long, long, float)") == \
        "outer_small_kernel<float, c10::Half>"
    assert cru.kernel_family("elementwise_kernel<TraceOp<c10::Half>, 8>") == "elementwise_kernel<TraceOp>"
    assert cru.kernel_family("outer_small_kernel<float, c10::Half>") == "outer_small_kernel"


def test_record_staleness_sample():
    rows = _sample_rows()
    toolchain = cru.toolchain_text("release 13.0, V13.0.88", "2.14.1+cu130")
    text = cru.render(rows, "release 13.0, V13.0.88", "2.14.1+cu130", "2000-01-01")
    assert cru.record_toolchain(text) == toolchain
    assert cru.record_problems(rows, text, toolchain) == ([], True)
    # The date and prose are not compared; a changed table cell is.
    assert cru.record_problems(rows, text.replace("2000-01-01", "2001-01-01"), toolchain) == ([], True)
    stale = text.replace("| 30 |", "| 31 |")
    assert stale != text
    problems, compared = cru.record_problems(rows, stale, toolchain)
    assert compared and len(problems) == 1 and "out of date" in problems[0]
    # A missing row is stale too.
    problems, _ = cru.record_problems(rows[:-1], text, toolchain)
    assert problems
    # Another toolchain's record: not compared.
    assert cru.record_problems(rows, stale, cru.toolchain_text("release 13.1, V13.1.0", "2.14.1+cu130")) == ([], False)


def test_flags_mirror_the_build(monkeypatch):
    """The script's nvcc flags are the ones setup.py's CUDAExtension build passes."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    consts = {}
    nvcc = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if isinstance(node.value, ast.Constant):
                consts[name] = node.value.value
            if name == "nvcc":
                nvcc = node.value
    assert nvcc is not None, "setup.py has no `nvcc = [...]` list"
    lst = nvcc.left if isinstance(nvcc, ast.BinOp) else nvcc
    flags = [e.value if isinstance(e, ast.Constant) else consts[e.id] for e in lst.elts]
    assert flags == cru.SETUP_NVCC_FLAGS

    torch_ext = pytest.importorskip("torch.utils.cpp_extension")
    assert cru.TORCH_NVCC_FLAGS == torch_ext.COMMON_NVCC_FLAGS
    if hasattr(torch_ext, "_get_cuda_arch_flags"):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
        assert torch_ext._get_cuda_arch_flags() == [cru.GENCODE]


# ---- the real kernels -----------------------------------------------------------

NVCC = cru.find_nvcc()
TORCH_INCLUDE = cru.find_torch_include()
_why = ("nvcc is not on PATH (nor in $CUDA_HOME/bin)" if NVCC is None else
        "torch's headers (c10/util/Half.h) not found" if TORCH_INCLUDE is None else
        "c++filt (binutils) is not on PATH" if shutil.which("c++filt") is None else None)
needs_nvcc = pytest.mark.skipif(_why is not None, reason=f"compiles the CUDA kernels for sm_90: {_why}")


@pytest.fixture(scope="module")
def ptxas_rows():
    rows, _, _ = cru.collect(NVCC, TORCH_INCLUDE)
    return rows


@pytest.mark.slow
@needs_nvcc
def test_every_kernel_is_reported_with_launch_bounds(ptxas_rows):
    entries = [r for r in ptxas_rows if r.usage.entry]
    assert {r.source for r in entries} == {os.path.basename(s) for s in cru.sources()}
    assert entries and all(r.usage.arch == "sm_90" for r in entries)
    assert [r.kernel for r in entries if not r.bounds.declared] == [], "kernels without __launch_bounds__"


@pytest.mark.slow
@needs_nvcc
def test_no_kernel_spills(ptxas_rows):
    spilling = [m for m in cru.offenders(ptxas_rows) if "spills" in m]
    assert spilling == [], "\n".join(spilling)


@pytest.mark.slow
@needs_nvcc
def test_registers_within_launch_bounds(ptxas_rows):
    over = [m for m in cru.offenders(ptxas_rows) if "registers >" in m]
    assert over == [], "\n".join(over)


@pytest.mark.slow
@needs_nvcc
def test_record_is_current(ptxas_rows):
    with open(cru.RECORD) as f:
        text = f.read()
    toolchain = cru.toolchain_text(cru.nvcc_version(NVCC), cru.torch_version(TORCH_INCLUDE))
    problems, compared = cru.record_problems(ptxas_rows, text, toolchain)
    if not compared:
        pytest.skip(f"the record was made with {cru.record_toolchain(text)!r}, this run has {toolchain!r}")
    assert problems == [], "\n".join(problems)
