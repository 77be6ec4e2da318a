#pragma once
// A restricted unpickler for the data.pkl inside a torch.save zip archive. It builds an inert object tree and
// never imports or calls anything: GLOBAL may name only the few callables a state dict needs (OrderedDict, the
// torch tensor/parameter rebuilders, torch.*Storage types), and REDUCE evaluates those few itself. Anything else
// is refused with sqasam::Error naming the file and the global.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sqasam::sam::pickle {

struct Object;
using Ref = Object*;  // owned by the Unpickler's arena, so shared and even cyclic references are harmless

// A storage named by a persistent id ('storage', torch.XStorage, key, location, numel): the bytes live in
// <archive>/data/<key>.
struct StorageRef {
    std::string key;
    std::string dtype;         // "float32", "float16", "bfloat16", "float64", "int64", ...
    int64_t element_size = 0;  // bytes per element
    int64_t numel = 0;         // elements in the whole storage
};

// A tensor view into a storage, as torch._utils._rebuild_tensor_v2 describes it (sizes/strides in elements).
struct TensorRef {
    StorageRef storage;
    int64_t storage_offset = 0;
    std::vector<int64_t> shape;
    std::vector<int64_t> stride;
};

struct Object {
    enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Storage, Tensor };
    Kind kind = Kind::None;
    bool boolean = false;
    int64_t integer = 0;
    double real = 0;
    std::string text;                          // String (also bytes); Global: "module.name"
    std::vector<Ref> items;                    // Tuple, List
    std::vector<std::pair<Ref, Ref>> entries;  // Dict, in insertion order
    StorageRef storage;                        // Storage
    TensorRef tensor;                          // Tensor
};

std::string kind_name(Object::Kind kind);

class Unpickler {
public:
    // file is used only in error messages.
    explicit Unpickler(std::string file);

    // Runs the pickle program up to STOP and returns its result (valid while this Unpickler lives).
    Ref load(std::string_view bytes);

private:
    Ref make(Object::Kind kind);
    Ref resolve_global(const std::string& module, const std::string& name);
    Ref reduce(Ref callable, Ref args);
    Ref persistent_load(Ref pid);
    [[noreturn]] void fail(const std::string& problem) const;

    std::string file_;
    std::deque<Object> arena_;
};

}  // namespace sqasam::sam::pickle
