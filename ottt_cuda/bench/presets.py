"""The two workloads `python -m ottt_cuda.bench` runs without options.

quick (the default): what a user training the paper's VGG-11 (sWS) sees, in under
3 minutes on a 2-core CPU: CIFAR-sized random input, batch 16 on the CPU
(32 on CUDA, T = 1, 4, 16), T = 1, 2, 4 and the three methods that carry the headline:
ottt_a (memory flat in T), bptt (memory growing with T) and SpikingJelly's OTTT
(sj_ottt, when SpikingJelly is installed).

full (--full): the paper's sweep, VGG-11 over T = 1..16 (32 on CUDA) with every
method that can run here, 3 timed rounds per T: half an hour or more on a 2-core
CPU. "Every method" includes SpikingJelly's peers when it is installed: its OTTT,
its BPTT and its BPTT under its memory optimizer (sj_bptt_memopt, what a user short
of memory with BPTT tries first); the quick default leaves the last two out.

Any explicit option (--model, --batch, --T, --methods, --rounds) overrides the preset.
"""
QUICK_METHODS = ("ottt_a", "bptt", "sj_ottt")
FULL_METHODS = None  # every method methods.available_methods() lists here, sj_bptt_memopt included

PRESETS = {
    ("quick", "cpu"): dict(model="vgg11_ws", batch=8, T=[1, 2, 4, 8], rounds=3, methods=QUICK_METHODS),
    ("quick", "cuda"): dict(model="vgg11_ws", batch=32, T=[1, 4, 16], rounds=3, methods=QUICK_METHODS),
    ("full", "cpu"): dict(model="vgg11_ws", batch=16, T=[1, 2, 4, 8, 16], rounds=3, methods=FULL_METHODS),
    ("full", "cuda"): dict(model="vgg11_ws", batch=128, T=[1, 2, 4, 8, 16, 32], rounds=3, methods=FULL_METHODS),
}

FULL_COMMAND = "python -m ottt_cuda.bench --full"


def preset(name, device):
    """The workload of preset `name` ("quick" or "full") on `device` ("cpu" or "cuda");
    methods None means every method available here."""
    return dict(PRESETS[name, device])
