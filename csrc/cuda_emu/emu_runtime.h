// An emulated CUDA device for the kernels of csrc/cuda/, compiled by a C++
// compiler: the CUDA keywords and built-in variables, the few runtime calls
// the launch code makes, and a launch that runs every (block, thread) of the
// grid on the host. This lets the very kernel source that runs on a GPU run,
// and be checked (values, sanitizers, races), on a machine without one.
//
// It is faithful only for what these kernels use: no shared memory, no
// __syncthreads, no atomics, no warp intrinsics. Each emulated thread runs to
// completion before the next starts, in a seeded shuffled order (so no result
// may depend on the order threads run in); with more than one host thread the
// shuffled threads are dealt round-robin over them, so that two emulated
// threads that touch the same element race visibly (ThreadSanitizer).
//
// Before running, a launch is checked against the hardware's limits; a bad
// configuration runs nothing and becomes the thread's last CUDA error, with a
// message naming the kernel and the bad value, as the runtime would report it
// to C10_CUDA_KERNEL_LAUNCH_CHECK. The emulated machine is small by default
// (2 SMs of 2048 threads) so that grid caps bite and grid-stride loops iterate
// at sizes a CPU test can afford; more devices of other sizes can be added.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cxxabi.h>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

// ---- keywords ---------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

// ---- built-in variables ------------------------------------------------------
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Per host thread: each host thread runs its share of a launch's threads.
inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

// ---- runtime types -----------------------------------------------------------
typedef struct CUstream_st* cudaStream_t;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorNotSupported = 801,
};

enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxThreadsPerMultiProcessor = 39,
};

namespace ottt {
namespace emu {

// Hardware limits a launch is checked against (every GPU of compute
// capability 3.0 and later).
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockXY = 1024;
constexpr unsigned kMaxBlockZ = 64;
constexpr uint64_t kMaxGridX = (uint64_t(1) << 31) - 1;
constexpr unsigned kMaxGridYZ = 65535;
constexpr size_t kMaxSharedPerBlock = 48 * 1024;  // without the opt-in attribute
constexpr int kMaxDevices = 64;                   // as many as kernel_utils.cuh caches
// Most (block, thread) pairs one emulated launch may hold (its shuffled order
// is materialized: 8 bytes each).
constexpr uint64_t kMaxEmulatedThreads = uint64_t(1) << 25;

struct Device {
  int sms;
  int threads_per_sm;
  bool attribute_queries_fail;  // every cudaDeviceGetAttribute fails (a broken driver)
};

struct LaunchRecord {
  std::string kernel;     // as written at the launch site, e.g. "elementwise_kernel<Op, V>"
  std::string signature;  // the instantiation's type, e.g. "void (*)(LifStepFwdOp<float>, long)"
  dim3 grid{0, 0, 0};
  dim3 block{0, 0, 0};
  size_t smem = 0;
};

inline int env_int(const char* name, int fallback) {
  const char* s = std::getenv(name);
  if (s == nullptr || *s == '\0') return fallback;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  return (end != s && *end == '\0' && v > 0 && v < (1L << 20)) ? static_cast<int>(v) : fallback;
}

// The emulated machine: one process-wide state, guarded by its mutex.
struct Machine {
  std::mutex mu;
  std::vector<Device> devices{Device{env_int("OTTT_CUDA_EMU_SMS", 2), 2048, false}};
  int host_threads = env_int("OTTT_CUDA_EMU_HOST_THREADS", 1);
  uint64_t seed = static_cast<uint64_t>(env_int("OTTT_CUDA_EMU_SEED", 20221));
  uint64_t launches = 0;
  LaunchRecord last;
  // Launches that ran, per kernel instantiation (signature): what a test reads
  // to know which kernels a model's step went through.
  std::map<std::string, uint64_t> counts;
};

inline Machine& machine() {
  static Machine m;
  return m;
}

// The current device. Process-wide, unlike CUDA's per-thread one: autograd
// may run a backward op on another thread than the forward's.
inline std::atomic<int> current_device{0};

// The last error of this host thread and what caused it.
inline thread_local cudaError_t last_error = cudaSuccess;
inline thread_local std::string last_error_detail;

inline cudaError_t fail(cudaError_t code, std::string detail) {
  // Like the runtime: the latest error replaces any unread one.
  last_error = code;
  last_error_detail = std::move(detail);
  return code;
}

inline const char* error_name(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotSupported: return "operation not supported";
  }
  return "unknown error";
}

inline std::string dims(const dim3& d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

// Why a launch of `kernel` with this configuration would fail on hardware, or
// "" when it would not.
inline std::string configuration_error(const char* kernel, const dim3& grid, const dim3& block, size_t smem) {
  const std::string who = std::string("launch of ") + kernel + ": ";
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return who + "grid " + dims(grid) + " has a zero dimension";
  if (block.x == 0 || block.y == 0 || block.z == 0) return who + "block " + dims(block) + " has a zero dimension";
  if (block.x > kMaxBlockXY || block.y > kMaxBlockXY)
    return who + "block " + dims(block) + " exceeds 1024 threads in x or y";
  if (block.z > kMaxBlockZ) return who + "block.z = " + std::to_string(block.z) + " exceeds 64";
  const uint64_t per_block = uint64_t(block.x) * block.y * block.z;
  if (per_block > kMaxThreadsPerBlock)
    return who + "block " + dims(block) + " has " + std::to_string(per_block) + " threads, more than 1024";
  if (grid.x > kMaxGridX) return who + "grid.x = " + std::to_string(grid.x) + " exceeds 2^31 - 1";
  if (grid.y > kMaxGridYZ) return who + "grid.y = " + std::to_string(grid.y) + " exceeds 65535";
  if (grid.z > kMaxGridYZ) return who + "grid.z = " + std::to_string(grid.z) + " exceeds 65535";
  if (smem > kMaxSharedPerBlock)
    return who + "dynamic shared memory of " + std::to_string(smem) + " bytes exceeds 49152 per block";
  return "";
}

// Runs `thread_body` once per (block, thread) of the grid, built-ins set.
// The readable type of a kernel instantiation (its template arguments name the
// element-wise op and the dtype, which the launch site's text does not).
template <typename Kernel>
const std::string& signature_of() {
  static const std::string sig = [] {
    int status = 0;
    char* readable = abi::__cxa_demangle(typeid(Kernel).name(), nullptr, nullptr, &status);
    std::string out = (status == 0 && readable != nullptr) ? readable : typeid(Kernel).name();
    std::free(readable);
    return out;
  }();
  return sig;
}

template <typename Body>
void run_grid(const char* kernel, const std::string& signature, const dim3& grid, const dim3& block, size_t smem,
              const Body& thread_body) {
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  const uint64_t per_block = uint64_t(block.x) * block.y * block.z;
  if (blocks * per_block > kMaxEmulatedThreads) {
    fail(cudaErrorInvalidValue, std::string("launch of ") + kernel + ": grid " + dims(grid) + " x block " +
                                    dims(block) + " is more threads than the emulator runs (2^25)");
    return;
  }
  uint64_t seed;
  int host_threads;
  {
    Machine& m = machine();
    std::lock_guard<std::mutex> lock(m.mu);
    seed = m.seed * 0x9E3779B97F4A7C15ull + m.launches++;
    host_threads = m.host_threads;
    m.last = LaunchRecord{kernel, signature, grid, block, smem};
    ++m.counts[signature];
  }
  std::vector<uint64_t> order(blocks * per_block);
  for (uint64_t k = 0; k < order.size(); ++k) order[k] = ((k / per_block) << 32) | (k % per_block);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);

  auto work = [&](int part, int parts) {
    gridDim = grid;
    blockDim = block;
    for (uint64_t k = static_cast<uint64_t>(part); k < order.size(); k += static_cast<uint64_t>(parts)) {
      const uint64_t b = order[k] >> 32, t = order[k] & 0xffffffffu;
      blockIdx = dim3(static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                      static_cast<unsigned>(b / (uint64_t(grid.x) * grid.y)));
      threadIdx = dim3(static_cast<unsigned>(t % block.x), static_cast<unsigned>((t / block.x) % block.y),
                       static_cast<unsigned>(t / (uint64_t(block.x) * block.y)));
      thread_body();
    }
  };
  if (host_threads <= 1 || order.size() < 2) {
    work(0, 1);
    return;
  }
  std::vector<std::thread> helpers;
  for (int p = 1; p < host_threads; ++p) helpers.emplace_back(work, p, host_threads);
  work(0, host_threads);
  for (auto& h : helpers) h.join();
}

// What OTTT_LAUNCH(grid, block, smem, stream, kernel) builds; called with the
// kernel's arguments, it checks the configuration and runs the grid.
template <typename Kernel>
class Launch {
 public:
  Launch(const char* name, Kernel kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t /*stream*/)
      : name_(name), kernel_(kernel), grid_(grid), block_(block), smem_(smem) {}

  template <typename... Args>
  void operator()(const Args&... args) const {
    const std::string why = configuration_error(name_, grid_, block_, smem_);
    if (!why.empty()) {
      fail(cudaErrorInvalidConfiguration, why);
      return;
    }
    const Kernel kernel = kernel_;
    run_grid(name_, signature_of<Kernel>(), grid_, block_, smem_, [&] { kernel(args...); });
  }

 private:
  const char* name_;
  Kernel kernel_;
  dim3 grid_, block_;
  size_t smem_;
};

}  // namespace emu
}  // namespace ottt

// ---- runtime calls -------------------------------------------------------------
inline cudaError_t cudaGetDevice(int* device) {
  *device = ottt::emu::current_device.load();
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  using namespace ottt::emu;
  Device d;
  {
    Machine& m = machine();
    std::lock_guard<std::mutex> lock(m.mu);
    if (device < 0 || device >= static_cast<int>(m.devices.size()))
      return fail(cudaErrorInvalidDevice, "cudaDeviceGetAttribute: no emulated device " + std::to_string(device));
    d = m.devices[static_cast<size_t>(device)];
  }
  if (d.attribute_queries_fail)
    return fail(cudaErrorNotSupported, "cudaDeviceGetAttribute: emulated device " + std::to_string(device) +
                                           " fails every attribute query");
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = d.sms; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = d.threads_per_sm; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = static_cast<int>(kMaxThreadsPerBlock); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(kMaxSharedPerBlock); return cudaSuccess;
  }
  return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute not emulated");
}

inline cudaError_t cudaPeekAtLastError() { return ottt::emu::last_error; }

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ottt::emu::last_error;
  ottt::emu::last_error = cudaSuccess;
  ottt::emu::last_error_detail.clear();
  return e;
}

inline const char* cudaGetErrorString(cudaError_t e) { return ottt::emu::error_name(e); }
