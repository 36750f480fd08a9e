// The emulated-CUDA extension ottt_cuda._C_cuda_emu: the op schemas declared
// in their own library, ottt_cuda_emu (the host files of csrc/cuda/ register
// their CPU-tensor kernels there), and the controls of the emulated machine.
#ifndef OTTT_CUDA_EMU
#error "build this file with -DOTTT_CUDA_EMU (scripts/build_cuda_emu.py)"
#endif

#include <torch/extension.h>
#include <torch/library.h>

#include <stdexcept>
#include <string>

#include "../op_schemas.h"
#include "emu_runtime.h"

TORCH_LIBRARY(ottt_cuda_emu, m) { ottt::define_ops(m); }

namespace ottt {
namespace emu {
const char* sanitizer_build();  // emu_kernels.cpp: the sanitizer its kernels were built with, or ""
}  // namespace emu
}  // namespace ottt

namespace {

using ottt::emu::machine;

pybind11::dict build_info() {
  pybind11::dict d;
#ifdef OTTT_TORCH_VERSION
  d["torch_version"] = OTTT_TORCH_VERSION;
#else
  d["torch_version"] = "unknown";
#endif
  d["sanitize"] = ottt::emu::sanitizer_build();
  return d;
}

int add_device(int sms, int threads_per_sm, bool attribute_queries_fail) {
  if (sms <= 0) throw std::invalid_argument("sms must be > 0, got " + std::to_string(sms));
  if (threads_per_sm <= 0)
    throw std::invalid_argument("threads_per_sm must be > 0, got " + std::to_string(threads_per_sm));
  auto& m = machine();
  std::lock_guard<std::mutex> lock(m.mu);
  if (static_cast<int>(m.devices.size()) >= ottt::emu::kMaxDevices)
    throw std::invalid_argument("the emulated machine holds at most 64 devices");
  m.devices.push_back({sms, threads_per_sm, attribute_queries_fail});
  return static_cast<int>(m.devices.size()) - 1;
}

int device_count() {
  auto& m = machine();
  std::lock_guard<std::mutex> lock(m.mu);
  return static_cast<int>(m.devices.size());
}

void set_device(int device) {
  if (device < 0 || device >= device_count())
    throw std::invalid_argument("device must be in [0, " + std::to_string(device_count()) + "), got " +
                                std::to_string(device));
  ottt::emu::current_device = device;
}

pybind11::dict device_properties(int device) {
  auto& m = machine();
  std::lock_guard<std::mutex> lock(m.mu);
  if (device < 0 || device >= static_cast<int>(m.devices.size()))
    throw std::invalid_argument("no emulated device " + std::to_string(device));
  const auto& d = m.devices[static_cast<size_t>(device)];
  pybind11::dict out;
  out["sms"] = d.sms;
  out["threads_per_sm"] = d.threads_per_sm;
  out["attribute_queries_fail"] = d.attribute_queries_fail;
  return out;
}

void set_host_threads(int n) {
  if (n < 1 || n > 64) throw std::invalid_argument("host_threads must be in [1, 64], got " + std::to_string(n));
  auto& m = machine();
  std::lock_guard<std::mutex> lock(m.mu);
  m.host_threads = n;
}

int host_threads() {
  auto& m = machine();
  std::lock_guard<std::mutex> lock(m.mu);
  return m.host_threads;
}

void set_seed(uint64_t seed) {
  auto& m = machine();
  std::lock_guard<std::mutex> lock(m.mu);
  m.seed = seed;
}

pybind11::dict last_launch() {
  auto& m = machine();
  std::lock_guard<std::mutex> lock(m.mu);
  pybind11::dict out;
  out["kernel"] = m.last.kernel;
  out["signature"] = m.last.signature;
  out["grid"] = pybind11::make_tuple(m.last.grid.x, m.last.grid.y, m.last.grid.z);
  out["block"] = pybind11::make_tuple(m.last.block.x, m.last.block.y, m.last.block.z);
  out["smem"] = m.last.smem;
  out["count"] = m.launches;
  return out;
}

pybind11::dict launch_counts() {
  auto& m = machine();
  std::lock_guard<std::mutex> lock(m.mu);
  pybind11::dict out;
  for (const auto& [sig, n] : m.counts) out[pybind11::str(sig)] = n;
  return out;
}

void clear_launch_counts() {
  auto& m = machine();
  std::lock_guard<std::mutex> lock(m.mu);
  m.counts.clear();
}

// The hardware-limit checks of every launch, testable without a kernel that
// would launch that way.
void check_configuration(std::tuple<unsigned, unsigned, unsigned> grid,
                         std::tuple<unsigned, unsigned, unsigned> block, size_t smem) {
  const dim3 g(std::get<0>(grid), std::get<1>(grid), std::get<2>(grid));
  const dim3 b(std::get<0>(block), std::get<1>(block), std::get<2>(block));
  const std::string why = ottt::emu::configuration_error("noop_kernel", g, b, smem);
  if (!why.empty()) throw std::invalid_argument(why);
}

}  // namespace

PYBIND11_MODULE(_C_cuda_emu, m) {
  m.doc() = "ottt_cuda's CUDA kernels on an emulated launch (CPU tensors); the ops live in torch.ops.ottt_cuda_emu";
  m.def("build_info", &build_info, "How this extension was built");
  m.def("add_device", &add_device, pybind11::arg("sms"), pybind11::arg("threads_per_sm") = 2048,
        pybind11::arg("attribute_queries_fail") = false,
        "Adds an emulated device and returns its ordinal (select it with set_device)");
  m.def("device_count", &device_count);
  m.def("set_device", &set_device, "Makes an emulated device current for the calling thread");
  m.def("current_device", [] { return ottt::emu::current_device.load(); });
  m.def("device_properties", &device_properties);
  m.def("set_host_threads", &set_host_threads, "How many host threads run each launch's threads (dealt round-robin)");
  m.def("host_threads", &host_threads);
  m.def("set_seed", &set_seed, "Seed of the shuffled thread order (each launch derives its own from it)");
  m.def("last_launch", &last_launch, "Kernel (as written and its instantiation), grid, block and shared memory of the latest launch, and the launch count");
  m.def("launch_counts", &launch_counts, "Launches that ran since the last clear, per kernel instantiation");
  m.def("clear_launch_counts", &clear_launch_counts);
  m.def("check_configuration", &check_configuration, pybind11::arg("grid"), pybind11::arg("block"),
        pybind11::arg("smem") = 0, "Raises ValueError naming the bad value if a launch so configured would fail");
}
