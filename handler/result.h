// Errors as values: the hot path never throws for bad input. A Result<T> holds
// either a value or an Error (a stable code for machines, a message for humans).
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace ipayout {

struct Error {
  std::string code;     // stable, machine-readable ("bad_json", "invalid_setting", ...)
  std::string message;  // for humans; never contains secrets or request bodies
};

template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

}  // namespace ipayout
