#pragma once
// A reader for the files Python's torch.save writes (the zip format, the default since
// PyTorch 1.6): a pickle program ("data.pkl") plus one raw record per tensor storage.
//
// libtorch's own torch::pickle_load stops at the `_metadata` attribute that
// Module.state_dict() attaches to its OrderedDict (libtorch 1.13: "Expected GenericDict but
// got None"), so distill interprets the pickle itself. It understands exactly what state
// dicts need: containers, numbers, strings, OrderedDict, tensors (_rebuild_tensor_v2,
// _rebuild_parameter) and libtorch's own type tags, and rejects any other object by name.

#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include "distill/core/error.hpp"

namespace distill::io::detail {

/// A Python value as far as state dicts need one.
struct PyValue {
  enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Tensor };
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string text;                                                     // String; Global "module.name"
  std::vector<std::shared_ptr<PyValue>> items;                          // Tuple, List
  std::vector<std::pair<std::shared_ptr<PyValue>, std::shared_ptr<PyValue>>> entries;  // Dict
  torch::Tensor tensor;                                                 // Tensor, and storages

  static const char* kind_name(Kind k) {
    static const char* names[] = {"None", "bool", "int", "float", "str", "tuple", "list", "dict", "global", "tensor"};
    return names[static_cast<int>(k)];
  }
};
using PyPtr = std::shared_ptr<PyValue>;

inline PyPtr make_value(PyValue::Kind kind) {
  auto v = std::make_shared<PyValue>();
  v->kind = kind;
  return v;
}

inline torch::Dtype storage_dtype(const std::string& global, const std::string& file) {
  static const std::unordered_map<std::string, torch::Dtype> types{
      {"torch.FloatStorage", torch::kFloat},    {"torch.DoubleStorage", torch::kDouble},
      {"torch.HalfStorage", torch::kHalf},      {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kLong},      {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort},    {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},      {"torch.BoolStorage", torch::kBool}};
  auto it = types.find(global);
  if (it == types.end()) distill::fail(file, ": unsupported tensor storage type ", global);
  return it->second;
}

/// Runs the pickle program of a torch.save archive and returns its top-level value.
class Unpickler {
 public:
  explicit Unpickler(const std::string& path) : path_(path) {
    if (!std::ifstream(path).good()) distill::fail(path, ": cannot open the file");
    try {
      reader_ = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
      if (reader_->hasRecord("byteorder")) {
        auto [data, size] = reader_->getRecord("byteorder");
        if (std::string(static_cast<const char*>(data.get()), size) != "little")
          distill::fail(path, ": big-endian tensor data is not supported");
      }
      auto [data, size] = reader_->getRecord("data.pkl");
      program_.assign(static_cast<const char*>(data.get()), size);
    } catch (const distill::Error&) {
      throw;
    } catch (const std::exception& e) {
      distill::fail(path, ": not a readable torch.save file (the zip format PyTorch writes by default; "
                                  "legacy files need torch.save(..., _use_new_zipfile_serialization=True)): ",
                            first_line(e.what()));
    }
  }

  PyPtr run() {
    using K = PyValue::Kind;
    while (true) {
      const auto op = static_cast<unsigned char>(byte());
      switch (op) {
        case 0x80: byte(); break;                                   // PROTO
        case 0x95: bytes(8); break;                                 // FRAME
        case '.': return pop();                                     // STOP
        case '(': marks_.push_back(stack_.size()); break;           // MARK
        case ')': push(make_value(K::Tuple)); break;                // EMPTY_TUPLE
        case ']': push(make_value(K::List)); break;                 // EMPTY_LIST
        case '}': push(make_value(K::Dict)); break;                 // EMPTY_DICT
        case 'N': push(make_value(K::None)); break;
        case 0x88: case 0x89: {                                     // NEWTRUE, NEWFALSE
          auto v = make_value(K::Bool);
          v->boolean = op == 0x88;
          push(v);
          break;
        }
        case 'K': push_int(static_cast<unsigned char>(byte())); break;            // BININT1
        case 'M': push_int(read_le(2, false)); break;                              // BININT2
        case 'J': push_int(read_le(4, true)); break;                               // BININT
        case 0x8a: push_int(read_le(static_cast<unsigned char>(byte()), true)); break;  // LONG1
        case 'G': {                                                                // BINFLOAT
          const std::string raw = bytes(8);
          uint64_t bits = 0;
          for (char c : raw) bits = (bits << 8) | static_cast<unsigned char>(c);
          auto v = make_value(K::Float);
          std::memcpy(&v->number, &bits, sizeof bits);
          push(v);
          break;
        }
        case 'X': case 'T': case 'B': push_string(bytes(read_le(4, false))); break;  // BINUNICODE, BINSTRING, BINBYTES
        case 0x8c: case 'U': case 'C': push_string(bytes(static_cast<unsigned char>(byte()))); break;
        case 0x8d: case 0x8e: push_string(bytes(read_le(8, false))); break;
        case 'c': {                                                                // GLOBAL
          auto module = line();
          push_global(module + "." + line());
          break;
        }
        case 0x93: {                                                               // STACK_GLOBAL
          auto name = pop(), module = pop();
          push_global(module->text + "." + name->text);
          break;
        }
        case 'q': memo_[static_cast<unsigned char>(byte())] = top(); break;        // BINPUT
        case 'r': memo_[read_le(4, false)] = top(); break;                         // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;                             // MEMOIZE
        case 'h': push(memo(static_cast<unsigned char>(byte()))); break;           // BINGET
        case 'j': push(memo(read_le(4, false))); break;                            // LONG_BINGET
        case 't': {                                                                // TUPLE
          auto v = make_value(K::Tuple);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 0x85: case 0x86: case 0x87: {                                         // TUPLE1..3
          auto v = make_value(K::Tuple);
          v->items.resize(op - 0x84);
          for (auto it = v->items.rbegin(); it != v->items.rend(); ++it) *it = pop();
          push(v);
          break;
        }
        case 'a': {                                                                // APPEND
          auto item = pop();
          expect(top(), K::List, "APPEND")->items.push_back(item);
          break;
        }
        case 'e': {                                                                // APPENDS
          auto items = pop_mark();
          auto& list = expect(top(), K::List, "APPENDS")->items;
          list.insert(list.end(), items.begin(), items.end());
          break;
        }
        case 's': {                                                                // SETITEM
          auto value = pop(), key = pop();
          expect(top(), K::Dict, "SETITEM")->entries.emplace_back(key, value);
          break;
        }
        case 'u': {                                                                // SETITEMS
          auto items = pop_mark();
          auto dict = expect(top(), K::Dict, "SETITEMS");
          for (size_t i = 0; i + 1 < items.size(); i += 2) dict->entries.emplace_back(items[i], items[i + 1]);
          break;
        }
        case 'b': pop(); break;  // BUILD: the only states in state dicts are OrderedDict._metadata
        case 'R': case 0x81: {                                                     // REDUCE, NEWOBJ
          auto args = pop();
          auto callable = pop();
          push(reduce(expect(callable, K::Global, "REDUCE")->text, expect(args, K::Tuple, "REDUCE")->items));
          break;
        }
        case 'Q': push(load_storage(expect(pop(), K::Tuple, "BINPERSID")->items)); break;  // BINPERSID
        default:
          corrupt("unsupported pickle opcode 0x" + hex(op));
      }
    }
  }

 private:
  [[noreturn]] void corrupt(const std::string& what) const {
    distill::fail(path_, ": corrupt or unsupported torch.save data at byte ", pos_, " of data.pkl: ", what);
  }
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
  static std::string hex(unsigned v) {
    const char* digits = "0123456789abcdef";
    return {digits[(v >> 4) & 15], digits[v & 15]};
  }

  char byte() {
    if (pos_ >= program_.size()) corrupt("unexpected end");
    return program_[pos_++];
  }
  std::string bytes(uint64_t n) {
    if (n > program_.size() - pos_) corrupt("unexpected end");
    auto out = program_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  std::string line() {
    auto end = program_.find('\n', pos_);
    if (end == std::string::npos) corrupt("unterminated GLOBAL");
    auto out = program_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return out;
  }
  int64_t read_le(size_t n, bool is_signed) {
    if (n > 8) corrupt("integer of " + std::to_string(n) + " bytes");
    const std::string raw = bytes(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(raw[i])) << (8 * i);
    if (is_signed && n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);
    return static_cast<int64_t>(v);
  }

  void push(PyPtr v) { stack_.push_back(std::move(v)); }
  void push_int(int64_t i) {
    auto v = make_value(PyValue::Kind::Int);
    v->integer = i;
    push(v);
  }
  void push_string(std::string s) {
    auto v = make_value(PyValue::Kind::String);
    v->text = std::move(s);
    push(v);
  }
  void push_global(std::string name) {
    auto v = make_value(PyValue::Kind::Global);
    v->text = std::move(name);
    push(v);
  }
  PyPtr top() {
    if (stack_.empty()) corrupt("empty stack");
    return stack_.back();
  }
  PyPtr pop() {
    auto v = top();
    stack_.pop_back();
    return v;
  }
  std::vector<PyPtr> pop_mark() {
    if (marks_.empty() || marks_.back() > stack_.size()) corrupt("missing MARK");
    std::vector<PyPtr> items(stack_.begin() + marks_.back(), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  PyPtr memo(int64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) corrupt("unknown memo key " + std::to_string(key));
    return it->second;
  }
  PyPtr expect(const PyPtr& v, PyValue::Kind kind, const char* op) {
    if (v->kind != kind)
      corrupt(std::string(op) + " expects a " + PyValue::kind_name(kind) + ", found a " + PyValue::kind_name(v->kind));
    return v;
  }
  int64_t as_int(const PyPtr& v, const char* what) {
    if (v->kind != PyValue::Kind::Int) corrupt(std::string(what) + " is not an int");
    return v->integer;
  }
  std::vector<int64_t> as_ints(const PyPtr& v, const char* what) {
    std::vector<int64_t> out;
    for (const auto& item : expect(v, PyValue::Kind::Tuple, what)->items) out.push_back(as_int(item, what));
    return out;
  }

  PyPtr reduce(const std::string& callable, const std::vector<PyPtr>& args) {
    if (callable == "collections.OrderedDict") {
      auto dict = make_value(PyValue::Kind::Dict);
      if (!args.empty())  // OrderedDict([(k, v), ...])
        for (const auto& pair : expect(args[0], PyValue::Kind::List, "OrderedDict")->items) {
          const auto& kv = expect(pair, PyValue::Kind::Tuple, "OrderedDict item")->items;
          if (kv.size() != 2) corrupt("OrderedDict item is not a pair");
          dict->entries.emplace_back(kv[0], kv[1]);
        }
      return dict;
    }
    if (callable == "torch._utils._rebuild_tensor_v2" && args.size() >= 4) {
      auto storage = expect(args[0], PyValue::Kind::Tensor, "_rebuild_tensor_v2 storage")->tensor;
      auto sizes = as_ints(args[2], "tensor size");
      auto strides = as_ints(args[3], "tensor stride");
      const int64_t offset = as_int(args[1], "storage offset");
      int64_t extent = offset + 1;
      for (size_t d = 0; d < sizes.size(); ++d) extent += (sizes[d] - 1) * strides[d];
      for (int64_t s : sizes)
        if (s == 0) extent = 0;
      if (sizes.size() != strides.size() || extent > storage.numel())
        corrupt("tensor view " + c10::str(c10::IntArrayRef(sizes)) + " does not fit its storage of " +
                std::to_string(storage.numel()) + " elements");
      auto v = make_value(PyValue::Kind::Tensor);
      v->tensor = storage.as_strided(sizes, strides, offset);
      return v;
    }
    if (callable == "torch._utils._rebuild_parameter" && !args.empty())
      return expect(args[0], PyValue::Kind::Tensor, "_rebuild_parameter data");
    if (callable == "torch.jit._pickle.restore_type_tag" && !args.empty()) return args[0];  // libtorch's pickle_save
    distill::fail(path_, ": holds a Python object of type ", callable,
                          "; distill reads state dicts (names -> tensors) only");
  }

  PyPtr load_storage(const std::vector<PyPtr>& id) {
    // ('storage', <storage type>, key, location, numel)
    if (id.size() < 5 || id[0]->kind != PyValue::Kind::String || id[0]->text != "storage")
      corrupt("unknown persistent id");
    const auto dtype = storage_dtype(expect(id[1], PyValue::Kind::Global, "storage type")->text, path_);
    const std::string key = expect(id[2], PyValue::Kind::String, "storage key")->text;
    if (auto it = storages_.find(key); it != storages_.end()) return it->second;
    const std::string record = "data/" + key;
    if (!reader_->hasRecord(record)) corrupt("missing record " + record);
    auto [data, size] = reader_->getRecord(record);
    const size_t element = c10::elementSize(dtype);
    if (size % element != 0) corrupt("record " + record + " is not a whole number of elements");
    auto v = make_value(PyValue::Kind::Tensor);
    // Owned memory (the record buffer dies with this function); tensors that share a storage
    // in Python share it here too.
    v->tensor = torch::empty({static_cast<int64_t>(size / element)}, torch::TensorOptions().dtype(dtype));
    std::memcpy(v->tensor.data_ptr(), data.get(), size);
    storages_[key] = v;
    return v;
  }

  std::string path_;
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader_;
  std::string program_;
  size_t pos_ = 0;
  std::vector<PyPtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<int64_t, PyPtr> memo_;
  std::unordered_map<std::string, PyPtr> storages_;
};

}  // namespace distill::io::detail
