#pragma once
// Hand-made torch.save files for the hostile-input tests and the fuzz targets: a pickle
// program written opcode by opcode, stored with libtorch's own zip writer next to raw
// storage records, so each file is exactly the malformed structure a test names.

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <caffe2/serialize/inline_container.h>

namespace distill_test {

/// A pickle program, built opcode by opcode (protocol 2 opcodes, as torch.save writes them).
struct Pickle {
  std::string bytes = std::string("\x80\x02", 2);

  Pickle& op(char c) { bytes += c; return *this; }
  Pickle& mark() { return op('('); }
  Pickle& str(const std::string& s) {
    op('X');
    for (int i = 0; i < 4; ++i) bytes += static_cast<char>((s.size() >> (8 * i)) & 0xFF);
    bytes += s;
    return *this;
  }
  Pickle& integer(int64_t v) {  // LONG1 of 8 bytes
    op('\x8a').op('\x08');
    for (int i = 0; i < 8; ++i) bytes += static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xFF);
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) { return op('c'), bytes += module + "\n" + name + "\n", *this; }
  Pickle& ints(const std::vector<int64_t>& v) {
    mark();
    for (auto x : v) integer(x);
    return op('t');
  }
  /// _rebuild_tensor_v2 of storage `key` (float, `numel` elements) viewed with sizes/strides.
  Pickle& tensor(const std::string& key, int64_t numel, int64_t offset, const std::vector<int64_t>& sizes,
                 const std::vector<int64_t>& strides) {
    global("torch._utils", "_rebuild_tensor_v2").mark();
    mark().str("storage").global("torch", "FloatStorage").str(key).str("cpu").integer(numel).op('t').op('Q');
    integer(offset).ints(sizes).ints(strides).op('\x89');
    return op('t').op('R');
  }
  Pickle& stop() { return op('.'); }
};

/// Writes a torch.save-style zip: "data.pkl" plus "data/<key>" records.
inline void write_torch_zip(const std::string& path, const std::string& program,
                            const std::map<std::string, std::string>& records = {}) {
  caffe2::serialize::PyTorchStreamWriter writer(path);
  writer.writeRecord("data.pkl", program.data(), program.size());
  for (const auto& [key, data] : records) writer.writeRecord("data/" + key, data.data(), data.size());
  writer.writeEndOfFile();
}

/// `n` floats 0, 1, 2, ... as a raw storage record.
inline std::string float_record(int n) {
  std::string out(static_cast<size_t>(n) * sizeof(float), '\0');
  for (int i = 0; i < n; ++i) {
    const float v = static_cast<float>(i);
    std::memcpy(out.data() + i * sizeof(float), &v, sizeof v);
  }
  return out;
}

}  // namespace distill_test
