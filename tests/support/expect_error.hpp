#pragma once
// expect_error: runs a callable that must throw distill::Error whose message holds every
// given fragment (the loss, argument, shapes, JSON path or file it is about).

#include <initializer_list>
#include <string>

#include <catch2/catch.hpp>

#include "distill/core/error.hpp"

namespace distill_test {

template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<const char*> fragments) {
  try {
    fn();
  } catch (const distill::Error& e) {
    const std::string message = e.what();
    INFO("message: " << message);
    for (const char* fragment : fragments) CHECK(message.find(fragment) != std::string::npos);
    return;
  }
  FAIL("no distill::Error was thrown");
}

}  // namespace distill_test
