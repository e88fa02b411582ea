// GEMMs through Intel MKL as XLA FFI handlers: bf16 x bf16 -> f32 (cblas_gemm_bf16bf16f32: AMX tiles, else
// AVX-512 BF16) and f32 x f32 -> f32 (cblas_sgemm). Built on first use by distilbert_jax/mkl_gemm.py.
//
// MKL runs sequentially: MKL's OpenMP threading layer (libiomp5) computed garbage in a process where PyTorch
// had loaded libgomp first, and its spinning threads took cores from XLA's own ops. Instead a GEMM is cut
// into one block of rows (or columns, whichever dimension is longer) per thread of XLA's intra-op pool;
// the pool's tasks and the calling thread claim blocks from a shared counter, so the caller never waits on
// a task that has not started (a busy pool only means the caller does more blocks itself).
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float,
                         float*, int);
using Bf16GemmFn = void (*)(int, int, int, int, int, int, float, const void*, int, const void*, int, float,
                            float*, int);
SgemmFn g_sgemm = nullptr;
Bf16GemmFn g_bf16 = nullptr;

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
constexpr int64_t kMinBlock = 64;  // rows / columns: smaller GEMMs run on the calling thread alone

// Shared by the caller and the pool tasks of one GEMM; the last one to finish frees it.
struct Job {
  int64_t blocks, block, m, n;
  bool split_rows;
  std::atomic<int64_t> next{0}, done{0};
  std::mutex mu;
  std::condition_variable cv;
};

template <typename RunBlock>
void RunBlocks(const std::shared_ptr<Job>& job, const RunBlock& run) {
  for (int64_t i; (i = job->next.fetch_add(1)) < job->blocks;) {
    int64_t lo = i * job->block, hi = std::min(lo + job->block, job->split_rows ? job->m : job->n);
    run(lo, hi);
    if (job->done.fetch_add(1) + 1 == job->blocks) {
      std::lock_guard<std::mutex> lock(job->mu);
      job->cv.notify_all();
    }
  }
}

// One MKL call, C = op(A) op(B) (row-major), by operand type: cblas_sgemm for float32 ...
void MklGemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c, int64_t ldc) {
  g_sgemm(kRowMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
}

// ... and cblas_gemm_bf16bf16f32 for bf16 (the FFI's 16-bit native type).
template <typename T>
void MklGemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
             float* c, int64_t ldc) {
  static_assert(sizeof(T) == 2, "bf16 operands");
  g_bf16(kRowMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
}

// C[m, n] = op(A) op(B); A is [m, k] ([k, m] if ta), B is [k, n] ([n, k] if tb), all row-major.
template <typename T>
void ParallelGemm(ffi::ThreadPool pool, int64_t m, int64_t n, int64_t k, bool ta, bool tb, const T* a,
                  const T* b, float* c) {
  int64_t lda = ta ? m : k, ldb = tb ? k : n;
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  bool split_rows = m >= n;
  int64_t len = split_rows ? m : n;
  int64_t block = std::max<int64_t>(kMinBlock, (len + threads - 1) / threads);  // one block a thread
  block = (block + 15) / 16 * 16;
  auto job = std::make_shared<Job>();
  job->blocks = (len + block - 1) / block;
  job->block = block;
  job->m = m, job->n = n, job->split_rows = split_rows;
  int op_a = ta ? kTrans : kNoTrans, op_b = tb ? kTrans : kNoTrans;
  auto run = [=](int64_t lo, int64_t hi) {
    if (split_rows) {  // rows lo..hi of A and C
      MklGemm(op_a, op_b, hi - lo, n, k, ta ? a + lo : a + lo * lda, lda, b, ldb, c + lo * n, n);
    } else {  // columns lo..hi of B and C
      MklGemm(op_a, op_b, m, hi - lo, k, a, lda, tb ? b + lo * ldb : b + lo, ldb, c + lo, n);
    }
  };
  int64_t helpers = std::min<int64_t>(threads, job->blocks) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([job, run] { RunBlocks(job, run); });
  RunBlocks(job, run);
  std::unique_lock<std::mutex> lock(job->mu);
  job->cv.wait(lock, [&] { return job->done.load() == job->blocks; });
}

template <ffi::DataType D>
ffi::Error Gemm(ffi::ThreadPool pool, ffi::Buffer<D> a, ffi::Buffer<D> b, ffi::ResultBuffer<ffi::F32> c,
                bool ta, bool tb) {
  auto ad = a.dimensions(), bd = b.dimensions();
  if (ad.size() != 2 || bd.size() != 2) return ffi::Error::InvalidArgument("MKL GEMM: operands must be 2-D");
  int64_t m = ta ? ad[1] : ad[0], k = ta ? ad[0] : ad[1];
  int64_t n = tb ? bd[0] : bd[1], kb = tb ? bd[1] : bd[0];
  if (k != kb) return ffi::Error::InvalidArgument("MKL GEMM: contracting dimensions differ");
  if (m == 0 || n == 0) return ffi::Error::Success();
  if (k == 0) {
    std::fill(c->typed_data(), c->typed_data() + m * n, 0.0f);
    return ffi::Error::Success();
  }
  if (std::max({m, n, k}) > INT32_MAX) return ffi::Error::InvalidArgument("MKL GEMM: dimension over 2^31");
  if (D == ffi::DataType::F32 ? !g_sgemm : !g_bf16)
    return ffi::Error::Internal("MKL GEMM: MKL is not loaded (call dj_mkl_load first)");
  ParallelGemm(pool, m, n, k, ta, tb, a.typed_data(), b.typed_data(), c->typed_data());
  return ffi::Error::Success();
}

}  // namespace

// Loads MKL's single dynamic library (libmkl_rt) with its sequential threading layer (the parallelism is
// XLA's pool). 0: ok; 1: dlopen failed (see dj_mkl_error); 2: a symbol is missing.
extern "C" int dj_mkl_load(const char* path) {
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) return 1;
  auto set_layer = reinterpret_cast<int (*)(int)>(dlsym(lib, "MKL_Set_Threading_Layer"));
  g_sgemm = reinterpret_cast<SgemmFn>(dlsym(lib, "cblas_sgemm"));
  g_bf16 = reinterpret_cast<Bf16GemmFn>(dlsym(lib, "cblas_gemm_bf16bf16f32"));
  if (!set_layer || !g_sgemm || !g_bf16) return 2;
  set_layer(1);  // MKL_THREADING_SEQUENTIAL: no OpenMP runtime in the process
  return 0;
}

extern "C" const char* dj_mkl_error() { return dlerror(); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(DjMklGemmBf16, Gemm<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DjMklGemmF32, Gemm<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));
