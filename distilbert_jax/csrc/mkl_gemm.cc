// GEMMs through Intel MKL as XLA FFI handlers: bf16 x bf16 -> f32 (cblas_gemm_bf16bf16f32: AMX tiles, else
// AVX-512 BF16) and f32 x f32 -> f32 (cblas_sgemm). Built on first use by distilbert_jax/mkl_gemm.py.
//
// MKL runs each GEMM on its own OpenMP team (`dj_mkl_load(path, threads)`); cutting GEMMs into blocks for
// XLA's intra-op pool instead ran the model's shapes at about half the rate (each block repacks its operand).
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>

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

template <ffi::DataType D>
ffi::Error Gemm(ffi::Buffer<D> a, ffi::Buffer<D> b, ffi::ResultBuffer<ffi::F32> c,
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
  using T = ffi::NativeType<D>;
  const T* ap = a.typed_data();
  const T* bp = b.typed_data();
  if constexpr (D == ffi::DataType::F32) {
    if (!g_sgemm) return ffi::Error::Internal("MKL GEMM: MKL is not loaded (call dj_mkl_load first)");
    g_sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, 1.0f, ap, ta ? m : k, bp,
            tb ? k : n, 0.0f, c->typed_data(), n);
  } else {
    if (!g_bf16) return ffi::Error::Internal("MKL GEMM: MKL is not loaded (call dj_mkl_load first)");
    g_bf16(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, 1.0f, ap, ta ? m : k, bp,
           tb ? k : n, 0.0f, c->typed_data(), n);
  }
  return ffi::Error::Success();
}

}  // namespace

// Loads MKL's single dynamic library (libmkl_rt) with its Intel OpenMP threading layer and `threads` threads.
// 0: ok; 1: dlopen failed (see dj_mkl_error); 2: a symbol is missing.
extern "C" int dj_mkl_load(const char* path, int threads) {
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) return 1;
  auto set_layer = reinterpret_cast<int (*)(int)>(dlsym(lib, "MKL_Set_Threading_Layer"));
  auto set_threads = reinterpret_cast<void (*)(int)>(dlsym(lib, "MKL_Set_Num_Threads"));
  g_sgemm = reinterpret_cast<SgemmFn>(dlsym(lib, "cblas_sgemm"));
  g_bf16 = reinterpret_cast<Bf16GemmFn>(dlsym(lib, "cblas_gemm_bf16bf16f32"));
  if (!set_layer || !set_threads || !g_sgemm || !g_bf16) return 2;
  set_layer(threads > 1 ? 0 : 1);  // MKL_THREADING_INTEL (OpenMP) or MKL_THREADING_SEQUENTIAL
  set_threads(threads);
  return 0;
}

extern "C" const char* dj_mkl_error() { return dlerror(); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(DjMklGemmBf16, Gemm<ffi::DataType::BF16>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DjMklGemmF32, Gemm<ffi::DataType::F32>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));
