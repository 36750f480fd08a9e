"""python -m ottt_cuda: how ottt_cuda was built and which backend each visible
device uses; what to paste into a bug report. `--json` prints the same as JSON."""
import argparse
import json
import platform
import sys

import torch

import ottt_cuda


def devices():
    """Every device this process can see: the CPU, then each CUDA device."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return out


def _device_name(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def report():
    """{"build_info": ..., "devices": [{"device", "name", "backend"}], "python", "platform"}.
    A backend that cannot be chosen (e.g. a bad OTTT_BACKEND) is reported as its
    error message, so the report itself never fails."""
    rows = []
    for d in devices():
        try:
            backend = ottt_cuda.get_backend(torch.device(d))
        except (ValueError, RuntimeError) as e:
            backend = f"error: {e}"
        rows.append({"device": d, "name": _device_name(d), "backend": backend})
    return {"build_info": ottt_cuda.build_info(), "devices": rows, "python": sys.version.split()[0],
            "platform": platform.platform()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ottt_cuda", description=__doc__.split("\n")[0][len("python -m "):])
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    r = report()
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"ottt_cuda {r['build_info']['version']}  python {r['python']}  {r['platform']}")
    print("build_info:")
    for k, v in r["build_info"].items():
        print(f"  {k}: {v}")
    print("backends:")
    for row in r["devices"]:
        print(f"  {row['device']} ({row['name']}): {row['backend']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
