// Scratch<T>: a grow-only buffer for per-call working memory (one class for every macro).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace pim {

// A grow-only buffer whose growth does not zero what is about to be overwritten (std::vector's
// resize would value-initialize every new element, and a macro's buffers change size from call
// to call: a forward output is 64 x 256, a gradient 784 x 256). Get(n) returns room for n
// elements, default-initialized when it grows, otherwise holding what the last user left.
template <class T>
class Scratch {
 public:
  T* Get(int64_t n) {
    if (n > cap_ || !data_) {
      data_.reset(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);  // default-initialized
      cap_ = n;
    }
    return data_.get();
  }
  const T* data() const { return data_.get(); }
  int64_t capacity() const { return cap_; }

 private:
  std::unique_ptr<T[]> data_;
  int64_t cap_ = 0;
};

}  // namespace pim
