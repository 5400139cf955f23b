// Registry for the stand-alone native test driver: each kernel family adds its checks with
// PQ_REGISTER_NATIVE_TEST(name, fn) in its own file under csrc/tools/, fn(Isa, TestCounter&)
// comparing that path against the scalar path and an oracle.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

#include "core/isa.h"

namespace pq {

struct TestCounter {
  size_t passed = 0, failed = 0;
  std::string prefix;
  void check(bool ok, const std::string& what) {
    if (ok) {
      ++passed;
    } else {
      ++failed;
      std::printf("FAIL %s%s\n", prefix.c_str(), what.c_str());
    }
  }
};

struct NativeTest {
  const char* name;
  void (*fn)(Isa, TestCounter&);
};

inline std::vector<NativeTest>& native_tests() {
  static std::vector<NativeTest> tests;
  return tests;
}

struct NativeTestRegistrar {
  NativeTestRegistrar(const char* name, void (*fn)(Isa, TestCounter&)) {
    native_tests().push_back({name, fn});
  }
};

#define PQ_REGISTER_NATIVE_TEST(name, fn) \
  const ::pq::NativeTestRegistrar pq_native_test_##name(#name, fn)

}  // namespace pq
