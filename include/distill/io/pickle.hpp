#pragma once
// A reader for the pickles distill loads weights from:
// - torch.save's zip format (the default since PyTorch 1.6): a pickle program ("data.pkl")
//   plus one raw record per tensor storage;
// - paddle.save's .pdparams: one plain pickle (protocol 2 or 4) of a dict from names to
//   numpy arrays (see io/paddle.hpp).
//
// libtorch's own torch::pickle_load stops at the `_metadata` attribute that
// Module.state_dict() attaches to its OrderedDict (libtorch 1.13: "Expected GenericDict but
// got None"), so distill interprets the pickle itself. It understands exactly what state
// dicts need: containers, numbers, strings, OrderedDict, tensors (_rebuild_tensor_v2,
// _rebuild_parameter), libtorch's own type tags, and numpy arrays rebuilt from raw bytes
// (numpy's _reconstruct, dtype and bytes in protocol 2), and rejects any other object by name.

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <iterator>
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
  PyValue() = default;
  PyValue(const PyValue&) = delete;
  PyValue& operator=(const PyValue&) = delete;
  // Frees the tree below without recursion: a file of 200,000 nested lists must not overflow
  // the stack while its values are released.
  ~PyValue() {
    std::vector<std::shared_ptr<PyValue>> pending;
    auto take = [&pending](PyValue& v) {
      for (auto& item : v.items) pending.push_back(std::move(item));
      for (auto& [key, value] : v.entries) {
        pending.push_back(std::move(key));
        pending.push_back(std::move(value));
      }
      v.items.clear();
      v.entries.clear();
    };
    take(*this);
    while (!pending.empty()) {
      auto v = std::move(pending.back());
      pending.pop_back();
      if (v && v.use_count() == 1) take(*v);
    }
  }

  // Array: a numpy array before its BUILD (it becomes a Tensor); DType: a numpy dtype, its
  // descriptor ("f4") in `text`.
  enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Tensor, Array, DType };
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string text;                                                     // String; Global "module.name"
  std::vector<std::shared_ptr<PyValue>> items;                          // Tuple, List
  std::vector<std::pair<std::shared_ptr<PyValue>, std::shared_ptr<PyValue>>> entries;  // Dict
  torch::Tensor tensor;                                                 // Tensor, and storages
  bool contained = false;  // placed in a container: it may not change any more (no cycles)

  static const char* kind_name(Kind k) {
    static const char* names[] = {"None",   "bool",   "int",  "float",         "str",        "tuple",
                                  "list",   "dict",   "global", "tensor", "numpy.ndarray", "numpy.dtype"};
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

/// The first line of a libtorch message (the rest is its C++ backtrace).
inline std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// Every record's CRC-32 is checked against the zip's central directory: a flipped byte in a
// weights file is an error rather than silently changed weights. The libtorch reader does
// not check them, so distill reads the central directory itself.
inline uint32_t crc32(const void* data, size_t size) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// Record name (without the archive's top folder) -> CRC-32, from the zip central directory.
inline std::unordered_map<std::string, uint32_t> read_zip_crcs(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<uint64_t>(in.tellg());
  auto read_at = [&](uint64_t at, size_t n) {
    std::string out(n, '\0');
    if (at > file_size || n > file_size - at) distill::fail(path, ": zip directory points outside the file");
    in.seekg(static_cast<std::streamoff>(at));
    in.read(out.data(), static_cast<std::streamsize>(n));
    if (!in) distill::fail(path, ": cannot read the zip directory");
    return out;
  };
  auto le = [](const std::string& s, size_t at, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
    return v;
  };
  // The end-of-directory record is in the last 22 + 65535 bytes (its comment is at most 64 KiB).
  const uint64_t tail_size = std::min<uint64_t>(file_size, 22 + 65535 + 20);
  const std::string tail = read_at(file_size - tail_size, tail_size);
  size_t end = std::string::npos;
  for (size_t i = tail.size() >= 22 ? tail.size() - 22 + 1 : 0; i-- > 0;)
    if (le(tail, i, 4) == 0x06054b50) { end = i; break; }
  if (end == std::string::npos) distill::fail(path, ": no zip end-of-directory record");
  uint64_t entries = le(tail, end + 10, 2), offset = le(tail, end + 16, 4), dir_size = le(tail, end + 12, 4);
  if (offset == 0xFFFFFFFFu || entries == 0xFFFFu) {  // zip64: the locator sits just before
    if (end < 20 || le(tail, end - 20, 4) != 0x07064b50) distill::fail(path, ": zip64 locator missing");
    const std::string z64 = read_at(le(tail, end - 20 + 8, 8), 56);
    if (le(z64, 0, 4) != 0x06064b50) distill::fail(path, ": zip64 end-of-directory record missing");
    entries = le(z64, 32, 8);
    dir_size = le(z64, 40, 8);
    offset = le(z64, 48, 8);
  }
  const std::string dir = read_at(offset, dir_size);
  std::unordered_map<std::string, uint32_t> crcs;
  size_t at = 0;
  for (uint64_t e = 0; e < entries; ++e) {
    if (at + 46 > dir.size() || le(dir, at, 4) != 0x02014b50) distill::fail(path, ": damaged zip directory");
    const size_t name_len = le(dir, at + 28, 2), extra = le(dir, at + 30, 2), comment = le(dir, at + 32, 2);
    if (at + 46 + name_len > dir.size()) distill::fail(path, ": damaged zip directory");
    std::string name = dir.substr(at + 46, name_len);
    name = name.substr(name.find('/') + 1);  // "archive/data/0" -> "data/0"
    crcs[name] = static_cast<uint32_t>(le(dir, at + 16, 4));
    at += 46 + name_len + extra + comment;
  }
  return crcs;
}

/// Checks every record of the zip archive `path` against its CRC-32 (a damaged file is an
/// error naming it). For archives read whole by libtorch (TorchScript exports).
inline void verify_zip(const std::string& path) {
  const auto crcs = read_zip_crcs(path);
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    for (const auto& record : reader.getAllRecords()) {
      auto it = crcs.find(record);
      auto [data, size] = reader.getRecord(record);
      if (it == crcs.end() || crc32(data.get(), size) != it->second)
        distill::fail(path, ": record ", record, " fails its CRC-32 check: the file is damaged (re-export or re-download it)");
    }
  } catch (const distill::Error&) {
    throw;
  } catch (const std::exception& e) {
    distill::fail(path, ": a damaged zip archive (", first_line(e.what()), ")");
  }
}

/// Runs the pickle program of a torch.save archive, or of a plain pickle file such as a
/// .pdparams, and returns its top-level value.
class Unpickler {
 public:
  explicit Unpickler(const std::string& path) : path_(path) {
    std::ifstream in(path, std::ios::binary);
    if (!in.good()) distill::fail(path, ": cannot open the file");
    if (in.peek() == 0x80) {  // PROTO: a plain pickle (a zip begins "PK")
      program_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      record_ = "the pickle";
      // torch.save's legacy format is a series of pickles, the first of them its magic number.
      if (program_.compare(0, 14, std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 14)) == 0)
        distill::fail(path, ": a torch.save file in the legacy format, which distill does not read; re-save it with "
                            "torch.save(..., _use_new_zipfile_serialization=True)");
      return;
    }
    try {
      reader_ = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
      if (reader_->hasRecord("byteorder")) {
        auto [data, size] = reader_->getRecord("byteorder");
        if (std::string(static_cast<const char*>(data.get()), size) != "little")
          distill::fail(path, ": big-endian tensor data is not supported");
      }
      crcs_ = read_zip_crcs(path);
      auto [data, size] = reader_->getRecord("data.pkl");
      verify_crc("data.pkl", data.get(), size);
      program_.assign(static_cast<const char*>(data.get()), size);
    } catch (const distill::Error&) {
      throw;
    } catch (const std::exception& e) {
      distill::fail(path, ": not a readable torch.save file (the zip format PyTorch writes by default) or paddle.save "
                          "file (a pickle): ", first_line(e.what()));
    }
  }

  /// Whether the file was a plain pickle rather than a torch.save archive.
  bool plain() const { return reader_ == nullptr; }

  PyPtr run() {
    try {
      return interpret();
    } catch (const distill::Error&) {
      throw;
    } catch (const std::exception& e) {  // a record the zip reader cannot extract, and the like
      corrupt(first_line(e.what()));
    }
  }

 private:
  PyPtr interpret() {
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
          auto name = expect(pop(), K::String, "STACK_GLOBAL"), module = expect(pop(), K::String, "STACK_GLOBAL");
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
          for (auto& item : pop_mark()) v->items.push_back(contain(v, item));
          push(v);
          break;
        }
        case 0x85: case 0x86: case 0x87: {                                         // TUPLE1..3
          auto v = make_value(K::Tuple);
          v->items.resize(op - 0x84);
          for (auto it = v->items.rbegin(); it != v->items.rend(); ++it) *it = contain(v, pop());
          push(v);
          break;
        }
        case 'a': {                                                                // APPEND
          auto item = pop();
          auto list = open_container(K::List, "APPEND");
          list->items.push_back(contain(list, item));
          break;
        }
        case 'e': {                                                                // APPENDS
          auto items = pop_mark();
          auto list = open_container(K::List, "APPENDS");
          for (auto& item : items) list->items.push_back(contain(list, item));
          break;
        }
        case 's': {                                                                // SETITEM
          auto value = pop(), key = pop();
          auto dict = open_container(K::Dict, "SETITEM");
          dict->entries.emplace_back(contain(dict, key), contain(dict, value));
          break;
        }
        case 'u': {                                                                // SETITEMS
          auto items = pop_mark();
          if (items.size() % 2 != 0) corrupt("SETITEMS with a key and no value");
          auto dict = open_container(K::Dict, "SETITEMS");
          for (size_t i = 0; i < items.size(); i += 2)
            dict->entries.emplace_back(contain(dict, items[i]), contain(dict, items[i + 1]));
          break;
        }
        case 'b': {                                                                // BUILD
          auto state = pop();
          build(state, top());
          break;
        }
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

  [[noreturn]] void corrupt(const std::string& what) const {
    distill::fail(path_, ": corrupt or unsupported data at byte ", pos_, " of ", record_, ": ", what);
  }
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
  // The container on top of the stack, if it may still grow. Python's pickler fills a
  // container before it is used anywhere else unless the structure refers to itself, which
  // no state dict does; refusing that keeps every value tree acyclic (and freeable).
  PyPtr open_container(PyValue::Kind kind, const char* op) {
    auto c = expect(top(), kind, op);
    if (c->contained) corrupt(std::string(op) + " changes a container that is already part of another value");
    return c;
  }
  PyPtr contain(const PyPtr& container, PyPtr item) {
    if (item == container) corrupt("a container that contains itself");
    item->contained = true;
    return item;
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
      check_view(sizes, strides, offset, storage.numel());
      auto v = make_value(PyValue::Kind::Tensor);
      v->tensor = storage.as_strided(sizes, strides, offset);
      return v;
    }
    if (callable == "torch._utils._rebuild_parameter" && !args.empty())
      return expect(args[0], PyValue::Kind::Tensor, "_rebuild_parameter data");
    if (callable == "torch.jit._pickle.restore_type_tag" && !args.empty()) return args[0];  // libtorch's pickle_save
    if (plain()) {  // numpy arrays as numpy pickles them (paddle.save)
      if ((callable == "numpy.core.multiarray._reconstruct" || callable == "numpy._core.multiarray._reconstruct") &&
          !args.empty() && args[0]->kind == PyValue::Kind::Global && args[0]->text == "numpy.ndarray")
        return make_value(PyValue::Kind::Array);
      if (callable == "numpy.dtype" && !args.empty()) {
        auto dtype = make_value(PyValue::Kind::DType);
        dtype->text = expect(args[0], PyValue::Kind::String, "numpy.dtype")->text;
        return dtype;
      }
      // Protocol 2 writes bytes as codecs.encode(their latin-1 decoding, "latin1").
      if (callable == "_codecs.encode" && args.size() == 2 && args[1]->kind == PyValue::Kind::String &&
          (args[1]->text == "latin1" || args[1]->text == "latin-1")) {
        auto raw = make_value(PyValue::Kind::String);
        raw->text = latin1(expect(args[0], PyValue::Kind::String, "codecs.encode")->text);
        return raw;
      }
      if ((callable == "__builtin__.bytes" || callable == "builtins.bytes") && args.empty())  // b"" in protocol 2
        return make_value(PyValue::Kind::String);
    }
    distill::fail(path_, ": holds a Python object of type ", callable,
                          "; distill reads state dicts (names -> tensors or numpy arrays) only");
  }

  // BUILD sets an object's state. Numpy arrays and dtypes get theirs; an OrderedDict's state
  // (its _metadata) carries nothing distill needs.
  void build(const PyPtr& state, const PyPtr& object) {
    using K = PyValue::Kind;
    if (object->kind == K::Dict) return;
    if (object->contained || (object->kind != K::DType && object->kind != K::Array))
      corrupt(std::string("BUILD on a ") + PyValue::kind_name(object->kind));
    const auto& items = expect(state, K::Tuple, "BUILD")->items;
    if (object->kind == K::DType) {  // (version, byte order, ...)
      if (items.size() < 2 || items[1]->kind != K::String) corrupt("a numpy dtype state without a byte order");
      if (items[1]->text == ">") corrupt("big-endian numpy arrays are not supported");
      return;
    }
    // (version, shape, dtype, is_fortran, raw bytes)
    if (items.size() != 5 || items[2]->kind != K::DType || items[3]->kind != K::Bool || items[4]->kind != K::String)
      corrupt("a numpy array state that is not (version, shape, dtype, is_fortran, bytes)");
    auto shape = as_ints(items[1], "numpy array shape");
    const torch::Dtype dtype = numpy_dtype(items[2]->text);
    int64_t numel = 1;
    for (int64_t d : shape)
      if (d < 0 || __builtin_mul_overflow(numel, d, &numel)) corrupt("numpy array shape " + c10::str(c10::IntArrayRef(shape)));
    const std::string& raw = items[4]->text;
    if (static_cast<uint64_t>(raw.size()) != static_cast<uint64_t>(numel) * c10::elementSize(dtype))
      corrupt("a numpy array of shape " + c10::str(c10::IntArrayRef(shape)) + " and dtype " + items[2]->text + " with " +
              std::to_string(raw.size()) + " bytes of data");
    const bool fortran = items[3]->boolean;  // column-major: the reversed shape, transposed back
    if (fortran) std::reverse(shape.begin(), shape.end());
    torch::Tensor tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype));
    if (!raw.empty()) std::memcpy(tensor.data_ptr(), raw.data(), raw.size());
    if (fortran) {
      std::vector<int64_t> order(shape.size());
      for (size_t d = 0; d < order.size(); ++d) order[d] = static_cast<int64_t>(order.size() - 1 - d);
      tensor = tensor.permute(order).contiguous();
    }
    object->kind = K::Tensor;
    object->tensor = tensor;
  }

  torch::Dtype numpy_dtype(const std::string& descr) {
    static const std::unordered_map<std::string, torch::Dtype> types{
        {"f2", torch::kHalf}, {"f4", torch::kFloat}, {"f8", torch::kDouble}, {"i1", torch::kChar},
        {"i2", torch::kShort}, {"i4", torch::kInt},  {"i8", torch::kLong},   {"u1", torch::kByte},
        {"b1", torch::kBool}};
    auto it = types.find(descr);
    if (it == types.end()) corrupt("numpy dtype '" + descr + "' is not supported");
    return it->second;
  }

  // The bytes of a string of code points below 256, from its UTF-8 form.
  std::string latin1(const std::string& utf8) {
    std::string out;
    out.reserve(utf8.size());
    for (size_t i = 0; i < utf8.size(); ++i) {
      const auto c = static_cast<unsigned char>(utf8[i]);
      if (c < 0x80) {
        out.push_back(static_cast<char>(c));
      } else if ((c == 0xC2 || c == 0xC3) && i + 1 < utf8.size() && (static_cast<unsigned char>(utf8[i + 1]) & 0xC0) == 0x80) {
        out.push_back(static_cast<char>(((c & 0x1F) << 6) | (static_cast<unsigned char>(utf8[++i]) & 0x3F)));
      } else {
        corrupt("codecs.encode(..., 'latin1') of a string that is not latin-1");
      }
    }
    return out;
  }

  void verify_crc(const std::string& record, const void* data, size_t size) const {
    auto it = crcs_.find(record);
    if (it == crcs_.end()) corrupt("record " + record + " is not in the zip directory");
    if (crc32(data, size) != it->second)
      distill::fail(path_, ": record ", record, " fails its CRC-32 check: the file is damaged (re-download or re-save it)");
  }
  // A view must lie inside its storage: sizes and strides of one length, nothing negative, and
  // the last element's index (computed without overflow) below the storage's size.
  void check_view(const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides, int64_t offset,
                  int64_t storage_numel) {
    const std::string view = "tensor view of size " + c10::str(c10::IntArrayRef(sizes)) + ", stride " +
                             c10::str(c10::IntArrayRef(strides)) + " and offset " + std::to_string(offset);
    if (sizes.size() != strides.size()) corrupt(view + ": sizes and strides differ in length");
    if (offset < 0) corrupt(view + ": negative storage offset");
    int64_t last = offset, numel = 1;
    for (size_t d = 0; d < sizes.size(); ++d) {
      if (sizes[d] < 0 || strides[d] < 0) corrupt(view + ": negative size or stride");
      int64_t step = 0;
      if (__builtin_mul_overflow(sizes[d], numel, &numel) ||
          (sizes[d] > 0 && (__builtin_mul_overflow(sizes[d] - 1, strides[d], &step) ||
                            __builtin_add_overflow(last, step, &last))))
        corrupt(view + ": sizes overflow");
    }
    if (numel > 0 && last >= storage_numel)
      corrupt(view + " does not fit its storage of " + std::to_string(storage_numel) + " elements");
  }

  PyPtr load_storage(const std::vector<PyPtr>& id) {
    if (plain()) corrupt("a persistent id (a tensor storage) outside a torch.save archive");
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
    verify_crc(record, data.get(), size);
    auto v = make_value(PyValue::Kind::Tensor);
    // Owned memory (the record buffer dies with this function); tensors that share a storage
    // in Python share it here too.
    v->tensor = torch::empty({static_cast<int64_t>(size / element)}, torch::TensorOptions().dtype(dtype));
    if (size > 0) std::memcpy(v->tensor.data_ptr(), data.get(), size);
    storages_[key] = v;
    return v;
  }

  std::string path_;
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader_;
  std::string program_;
  std::string record_ = "data.pkl";  // what program_ is, for messages
  size_t pos_ = 0;
  std::vector<PyPtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<int64_t, PyPtr> memo_;
  std::unordered_map<std::string, PyPtr> storages_;
  std::unordered_map<std::string, uint32_t> crcs_;
};

}  // namespace distill::io::detail
