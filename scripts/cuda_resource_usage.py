"""Registers, spills, stack and shared memory of every CUDA kernel instantiation
for sm_90, as ptxas reports them, with the launch bound of each kernel.

    python3 scripts/cuda_resource_usage.py            # print the table
    python3 scripts/cuda_resource_usage.py --write    # rewrite docs/cuda_resource_usage_sm90.md
    python3 scripts/cuda_resource_usage.py --check    # fail on spills, registers over the bound, or a stale record

Each csrc/cuda/*.cu is compiled once with nvcc (`-Xptxas -v`, `--keep` for the
PTX), with the flags the package build gives nvcc for these files (NVCC_FLAGS
below). Standard library only; it needs nvcc (PATH or $CUDA_HOME/bin), c++filt
and torch's headers (the .cu files include c10/util/Half.h and BFloat16.h):
found through the importable torch, `--torch-include`, or ./.venv.

Rules checked by --check, per kernel instantiation:
* no spills: ptxas's spill stores and spill loads are both 0 (for the kernel
  and for any non-inlined device function it reports);
* registers within the launch bound: with __launch_bounds__(B[, M]) (the PTX
  `.maxntid B` [`.minnctapersm M`]) a kernel may use at most
  min(255, (65536 // (B * M)) rounded down to a multiple of 8) registers per
  thread: sm_90 has 65536 registers per SM, 255 per thread at most, allocated
  in multiples of 8 per thread. A kernel without launch bounds is held to
  B = 1024 (the largest block). A `.maxnreg` lowers the limit further.
  (ptxas itself honours the bound by spilling, so in practice the spill rule
  is the one that trips; the register rule catches a bound that was dropped.)
* the record is current: the table rows of docs/cuda_resource_usage_sm90.md
  equal what ptxas reports now. They are compared only when the record was made
  with the same nvcc release and torch version as this run (another toolchain
  may legitimately allocate differently); the rules above are checked always.
"""
import argparse
import dataclasses
import datetime
import difflib
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = os.path.join(ROOT, "docs", "cuda_resource_usage_sm90.md")
ARCH = "sm_90"
REGS_PER_SM = 65536
MAX_REGS_PER_THREAD = 255
REG_GRANULE = 8  # registers per thread are allocated in multiples of 8
MAX_BLOCK_THREADS = 1024

# The nvcc flags of setup.py's build for csrc/cuda/*.cu, mirrored rather than
# imported: setup.py imports torch and calls setup() at import time, so it cannot
# be imported cleanly. They are, in the order torch's BuildExtension passes them:
# torch.utils.cpp_extension.COMMON_NVCC_FLAGS and `--compiler-options '-fPIC'`,
# then setup.py's own nvcc list ("-O3", "-std=c++20", "-lineinfo" + its defines),
# then the -gencode of TORCH_CUDA_ARCH_LIST's 9.0 (GENCODE). BuildExtension
# also adds -DTORCH_API_INCLUDE_EXTENSION_H and -DTORCH_EXTENSION_NAME=_C.
# The defines whose values name the torch version and arch list
# (OTTT_TORCH_VERSION, OTTT_CUDA_ARCHS) are used only by csrc/ops_registration.cpp
# and are left out so that the command is the same on every machine.
# tests/test_cuda_resource_usage.py checks this list against setup.py and torch.
TORCH_NVCC_FLAGS = [
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
]
SETUP_NVCC_FLAGS = ["-O3", "-std=c++20", "-lineinfo"]
NVCC_FLAGS = (TORCH_NVCC_FLAGS + ["--compiler-options", "'-fPIC'"] + SETUP_NVCC_FLAGS +
              ["-DOTTT_WITH_CUDA", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C"])
GENCODE = "-gencode=arch=compute_90,code=sm_90"
REPORT_FLAGS = ["-Xptxas", "-v"]

COLUMNS = ["source", "kernel instantiation", "launch bound", "registers", "register limit", "spill stores (B)",
           "spill loads (B)", "stack frame (B)", "shared mem (B)"]


@dataclasses.dataclass
class Usage:
    """What ptxas reports for one function (an entry, or a non-inlined device function)."""
    name: str  # mangled
    entry: bool = False
    arch: str = ""
    registers: int = 0
    barriers: int = 0
    smem: int = 0
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0


@dataclasses.dataclass
class Bounds:
    """The launch bounds of one .entry, from its PTX directives."""
    threads: int = MAX_BLOCK_THREADS  # .maxntid (product of its dimensions); 1024 when absent
    min_blocks: int = 1  # .minnctapersm
    maxnreg: int = 0  # .maxnreg; 0 when absent
    declared: bool = False  # a .maxntid or .reqntid was present


@dataclasses.dataclass
class Row:
    source: str
    kernel: str  # readable
    mangled: str
    usage: Usage
    bounds: Bounds

    @property
    def register_limit(self):
        return register_limit(self.bounds.threads, self.bounds.min_blocks, self.bounds.maxnreg)

    def cells(self):
        u, b = self.usage, self.bounds
        if not u.entry:
            return [self.source, self.kernel + " (device function)", "-", "-", "-", str(u.spill_stores),
                    str(u.spill_loads), str(u.stack), "-"]
        bound = str(b.threads) if b.declared else "none (1024)"
        if b.min_blocks > 1:
            bound += f" x {b.min_blocks} blocks"
        return [self.source, self.kernel, bound, str(u.registers), str(self.register_limit), str(u.spill_stores),
                str(u.spill_loads), str(u.stack), str(u.smem)]


def register_limit(threads, min_blocks=1, maxnreg=0):
    """Most registers per thread a kernel may use for its launch bound on sm_90."""
    per_thread = REGS_PER_SM // max(1, threads * max(1, min_blocks))
    limit = min(MAX_REGS_PER_THREAD, per_thread // REG_GRANULE * REG_GRANULE)
    return min(limit, maxnreg) if maxnreg else limit


# ---- parsing ----------------------------------------------------------------

_ENTRY = re.compile(r"ptxas info\s*:\s*Compiling entry function '([^']+)' for '([^']+)'")
_PROPS = re.compile(r"ptxas info\s*:\s*Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"ptxas info\s*:\s*Used (\d+) registers")
_BARRIERS = re.compile(r"used (\d+) barriers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(text):
    """{mangled name: Usage} from `ptxas -v` output (several files' output may be joined).

    The format (CUDA 12/13): an entry's block is
        ptxas info    : Compiling entry function 'NAME' for 'sm_90'
        ptxas info    : Function properties for NAME
            S bytes stack frame, T bytes spill stores, L bytes spill loads
        ptxas info    : Used R registers, used B barriers[, M bytes smem][, C bytes cmem[0]]
    and a device function that was not inlined gets its own "Function properties"
    block (no "Used" line) inside its caller's.
    """
    out = {}
    current = None  # the entry whose "Used" line comes next
    props = None  # the function whose frame line comes next
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = out.setdefault(m.group(1), Usage(m.group(1), entry=True, arch=m.group(2)))
            props = None
            continue
        m = _PROPS.search(line)
        if m:
            props = out.setdefault(m.group(1), Usage(m.group(1)))
            continue
        m = _FRAME.search(line)
        if m and props is not None:
            props.stack, props.spill_stores, props.spill_loads = (int(g) for g in m.groups())
            props = None
            continue
        m = _USED.search(line)
        if m and current is not None:
            current.registers = int(m.group(1))
            b = _BARRIERS.search(line)
            s = _SMEM.search(line)
            current.barriers = int(b.group(1)) if b else 0
            current.smem = int(s.group(1)) if s else 0
            current = None
    return out


_PTX_ENTRY = re.compile(r"\.entry\s+([A-Za-z_$][\w$]*)\s*\(")


def parse_ptx_bounds(ptx):
    """{mangled name: Bounds} of every .entry in PTX text (directives between its
    parameter list and its body)."""
    out = {}
    for m in _PTX_ENTRY.finditer(ptx):
        close = ptx.find(")", m.end())
        body = ptx.find("{", close)
        directives = ptx[close + 1:body if body >= 0 else None]
        b = Bounds()
        nt = re.search(r"\.(?:maxntid|reqntid)\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?", directives)
        if nt:
            b.declared = True
            b.threads = 1
            for g in nt.groups():
                b.threads *= int(g) if g else 1
        mb = re.search(r"\.minnctapersm\s+(\d+)", directives)
        if mb:
            b.min_blocks = int(mb.group(1))
        mr = re.search(r"\.maxnreg\s+(\d+)", directives)
        if mr:
            b.maxnreg = int(mr.group(1))
        out[m.group(1)] = b
    return out


def demangle(names):
    """{mangled: demangled} through c++filt (one call for all names)."""
    names = list(names)
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None:
        raise RuntimeError("c++filt (binutils) is not on PATH: it demangles the kernel names")
    res = subprocess.run([cxxfilt], input="\n".join(names) + "\n", capture_output=True, text=True, check=True)
    lines = res.stdout.splitlines()
    if len(lines) != len(names):
        raise RuntimeError("c++filt returned %d names for %d" % (len(lines), len(names)))
    return dict(zip(names, lines))


def readable_name(demangled):
    """`void ottt::gpu::k<ottt::gpu::(anonymous namespace)::Op<c10::Half>, 8>(..., long)` -> `k<Op<c10::Half>, 8>`."""
    s = demangled.replace("(anonymous namespace)::", "").replace("ottt::gpu::", "")
    if s.startswith("void "):
        s = s[len("void "):]
    depth = 0
    for i, ch in enumerate(s):  # cut the parameter list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            return s[:i]
    return s


def offenders(rows):
    """Messages for rows that spill or use more registers than their launch bound allows."""
    bad = []
    for r in rows:
        u = r.usage
        if u.spill_stores or u.spill_loads:
            bad.append(f"{r.source}: {r.kernel}: spills ({u.spill_stores} B stores, {u.spill_loads} B loads)")
        if u.entry and u.registers > r.register_limit:
            bad.append(f"{r.source}: {r.kernel}: {u.registers} registers > {r.register_limit} allowed by "
                       f"its launch bound of {r.bounds.threads} threads")
    return bad


# ---- the toolchain ------------------------------------------------------------

def find_nvcc():
    nvcc = shutil.which("nvcc")
    if nvcc is None and os.environ.get("CUDA_HOME"):
        cand = os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
        nvcc = cand if os.access(cand, os.X_OK) else None
    return nvcc


def find_torch_include(explicit=None):
    """torch's include folder (holding c10/util/Half.h), without importing torch."""
    cands = [explicit] if explicit else []
    if not explicit:
        try:
            spec = importlib.util.find_spec("torch")  # locates the package; does not run it
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            cands += [os.path.join(p, "include") for p in spec.submodule_search_locations]
        cands += sorted(glob.glob(os.path.join(ROOT, ".venv", "lib", "python*", "site-packages", "torch", "include")))
    for c in cands:
        if c and os.path.isfile(os.path.join(c, "c10", "util", "Half.h")):
            return os.path.abspath(c)
    return None


def torch_version(include):
    """torch.__version__ read from torch/version.py next to the include folder."""
    try:
        with open(os.path.join(os.path.dirname(include), "version.py")) as f:
            m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read(), re.M)
        return m.group(1) if m else "unknown"
    except OSError:
        return "unknown"


def nvcc_version(nvcc):
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release [\d.]+, V[\d.]+", out)
    return m.group(0) if m else out.strip().splitlines()[-1]


def sources():
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))


def command(nvcc, torch_include, source, keep_dir, obj):
    return ([nvcc] + NVCC_FLAGS + ["-I" + os.path.join(ROOT, "csrc"), "-isystem", torch_include, GENCODE] +
            REPORT_FLAGS + ["--keep", "--keep-dir", keep_dir, "-c", os.path.join(ROOT, source), "-o", obj])


def command_text():
    """The command as the record shows it (placeholders for machine-specific paths)."""
    flags = " ".join(NVCC_FLAGS).replace("'-fPIC'", "\"'-fPIC'\"")
    return (f"nvcc {flags} -I csrc -isystem <torch>/include {GENCODE} {' '.join(REPORT_FLAGS)} "
            f"--keep --keep-dir <tmp> -c csrc/cuda/<file>.cu -o <tmp>/<file>.o")


def collect(nvcc, torch_include, log=None):
    """Compiles every csrc/cuda/*.cu; returns (rows, warnings, seconds per source)."""
    rows, warnings, times = [], [], {}
    for src in sources():
        with tempfile.TemporaryDirectory(prefix="ottt_ru_") as tmp:
            obj = os.path.join(tmp, "k.o")
            t0 = time.perf_counter()
            res = subprocess.run(command(nvcc, torch_include, src, tmp, obj), capture_output=True, text=True)
            times[src] = time.perf_counter() - t0
            text = res.stdout + res.stderr
            if res.returncode != 0:
                raise RuntimeError(f"nvcc failed on {src} (rc {res.returncode}):\n{text}")
            if log:
                log(f"{src}: {times[src]:.1f} s")
            ptx = ""
            for p in sorted(glob.glob(os.path.join(tmp, "*.ptx"))):
                with open(p) as f:
                    ptx += f.read()
        warnings += [f"{src}: {line.strip()}" for line in text.splitlines() if "warning" in line.lower()]
        usage = parse_ptxas(text)
        bounds = parse_ptx_bounds(ptx)
        if not any(u.entry for u in usage.values()):
            raise RuntimeError(f"no ptxas entry-function lines in the output for {src}:\n{text}")
        names = demangle(usage)
        for mangled, u in usage.items():
            if u.entry and u.arch != ARCH:
                raise RuntimeError(f"{src}: {mangled} compiled for {u.arch}, expected {ARCH}")
            if u.entry and mangled not in bounds:
                raise RuntimeError(f"{src}: no .entry {mangled} in the PTX")
            rows.append(Row(os.path.basename(src), readable_name(names[mangled]), mangled, u,
                            bounds.get(mangled, Bounds())))
    rows.sort(key=lambda r: (r.source, not r.usage.entry, r.kernel))
    return rows, warnings, times


# ---- the record ----------------------------------------------------------------

def table_lines(rows):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = r.cells()
        cells[1] = "`" + cells[1] + "`"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def kernel_family(kernel):
    """A kernel's name without its type arguments: `outer_small_kernel`, and for the
    element-wise driver its op: `elementwise_kernel<TraceOp>`."""
    parts = kernel.split("<")
    return parts[0] + ("<" + parts[1] + ">" if parts[0] == "elementwise_kernel" and len(parts) > 1 else "")


def render(rows, nvcc_ver, torch_ver, date):
    entries = [r for r in rows if r.usage.entry]
    worst = {}
    for r in entries:
        worst[kernel_family(r.kernel)] = max(worst.get(kernel_family(r.kernel), 0), r.usage.registers)
    spilling = [r for r in rows if r.usage.spill_stores or r.usage.spill_loads]
    head = [
        "# CUDA kernel resource usage on sm_90",
        "",
        "Registers per thread, spills, stack frame and static shared memory of every kernel instantiation in",
        "`csrc/cuda/*.cu`, as ptxas reports them for sm_90 (H100/H200), with each kernel's launch bound (the",
        "`.maxntid` of its `__launch_bounds__`) and the most registers that bound allows:",
        "min(255, 65536 // threads rounded down to a multiple of 8). Generated by",
        "`scripts/cuda_resource_usage.py --write`; `--check` (run by `tests/test_cuda_resource_usage.py`) fails",
        "when a kernel spills, exceeds its register limit, or this table no longer matches what ptxas reports.",
        "Do not edit it by hand.",
        "",
        "- toolchain: " + toolchain_text(nvcc_ver, torch_ver),
        f"- date: {date}",
        "- command, once per `.cu` file (the flags of setup.py's nvcc build, restricted to sm_90):",
        "",
        "  ```",
        "  " + command_text(),
        "  ```",
        "",
        f"Summary: {len(entries)} kernel instantiations; most registers per kernel: "
        + ", ".join(f"`{k}` {v}" for k, v in sorted(worst.items())) + "; "
        + ("no spills." if not spilling else "spilling (what `--check` rejects): "
           + ", ".join(f"`{r.kernel}` ({r.usage.spill_stores} B stores, {r.usage.spill_loads} B loads)"
                       for r in spilling) + "."),
        "",
    ]
    return "\n".join(head + table_lines(rows)) + "\n"


def record_rows(text):
    """The table rows (header and separator included) of a record's text."""
    return [line.rstrip() for line in text.splitlines() if line.startswith("|")]


def record_toolchain(text):
    m = re.search(r"^- toolchain: (.*)$", text, re.M)
    return m.group(1).strip() if m else None


def record_problems(rows, text, toolchain):
    """([message] if the record's table differs from `rows`, else []; whether it was compared at all).
    Rows are compared only when the record names the same toolchain as this run."""
    if record_toolchain(text) != toolchain:
        return [], False
    diff = list(difflib.unified_diff(record_rows(text), table_lines(rows), "record", "ptxas now", lineterm="", n=0))
    if not diff:
        return [], True
    return ["the record is out of date (rerun with --write):\n" + "\n".join(diff)], True


def toolchain_text(nvcc_ver, torch_ver):
    return f"nvcc {nvcc_ver}; torch {torch_ver} headers"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite " + os.path.relpath(RECORD, ROOT))
    mode.add_argument("--check", action="store_true", help="fail on spills, registers over bound, stale record")
    ap.add_argument("--torch-include", help="torch's include folder (default: the importable torch, or ./.venv)")
    ap.add_argument("--record", default=RECORD, help="the record file (default: %(default)s)")
    args = ap.parse_args(argv)

    nvcc = find_nvcc()
    if nvcc is None:
        print("nvcc not found (PATH or $CUDA_HOME/bin)", file=sys.stderr)
        return 2
    inc = find_torch_include(args.torch_include)
    if inc is None:
        print("torch's headers not found: pass --torch-include DIR (the folder holding c10/util/Half.h)",
              file=sys.stderr)
        return 2
    nvcc_ver, torch_ver = nvcc_version(nvcc), torch_version(inc)
    toolchain = toolchain_text(nvcc_ver, torch_ver)
    t0 = time.perf_counter()
    rows, warnings, _ = collect(nvcc, inc, log=lambda s: print(s, file=sys.stderr))
    print(f"compiled {len(sources())} files in {time.perf_counter() - t0:.1f} s ({toolchain})", file=sys.stderr)
    for w in warnings:
        print("nvcc:", w, file=sys.stderr)
    bad = offenders(rows)

    if args.write:
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        with open(args.record, "w") as f:
            f.write(render(rows, nvcc_ver, torch_ver, date))
        print(f"wrote {os.path.relpath(args.record, ROOT)}: {sum(r.usage.entry for r in rows)} instantiations")
    elif args.check:
        try:
            with open(args.record) as f:
                text = f.read()
        except OSError as e:
            bad.append(f"no record {args.record}: {e}")
            text = None
        compared = True
        if text is not None:
            stale, compared = record_problems(rows, text, toolchain)
            bad += stale
            if not compared:
                print(f"record made with {record_toolchain(text)!r}, this run with {toolchain!r}: its rows are not "
                      "compared (spills and register limits are still checked)")
    else:
        print("\n".join(table_lines(rows)))

    if bad:
        print(f"{len(bad)} problem(s):", file=sys.stderr)
        for b in bad:
            print("  " + b, file=sys.stderr)
        return 1
    if args.check:
        print(f"ok: {sum(r.usage.entry for r in rows)} instantiations, no spills, registers within launch bounds"
              + (", record current" if compared else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
