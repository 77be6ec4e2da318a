#include "sam/pickle.hpp"

#include <cstring>
#include <map>
#include <unordered_map>

#include "sqasam/error.hpp"

namespace sqasam::sam::pickle {
namespace {

using Kind = Object::Kind;

// The pickle opcodes torch.save emits for a state dict (protocols 2-5), plus a few harmless relatives.
enum Opcode : uint8_t {
    MARK = '(',
    STOP = '.',
    POP = '0',
    POP_MARK = '1',
    DUP = '2',
    BININT = 'J',
    BININT1 = 'K',
    BININT2 = 'M',
    NONE = 'N',
    BINPERSID = 'Q',
    REDUCE = 'R',
    BINSTRING = 'T',
    SHORT_BINSTRING = 'U',
    BINUNICODE = 'X',
    BINBYTES = 'B',
    SHORT_BINBYTES = 'C',
    APPEND = 'a',
    BUILD = 'b',
    GLOBAL = 'c',
    DICT = 'd',
    APPENDS = 'e',
    BINGET = 'h',
    LONG_BINGET = 'j',
    LIST = 'l',
    BINPUT = 'q',
    LONG_BINPUT = 'r',
    SETITEM = 's',
    TUPLE = 't',
    SETITEMS = 'u',
    EMPTY_DICT = '}',
    EMPTY_LIST = ']',
    EMPTY_TUPLE = ')',
    BINFLOAT = 'G',
    PROTO = 0x80,
    TUPLE1 = 0x85,
    TUPLE2 = 0x86,
    TUPLE3 = 0x87,
    NEWTRUE = 0x88,
    NEWFALSE = 0x89,
    LONG1 = 0x8a,
    LONG4 = 0x8b,
    SHORT_BINUNICODE = 0x8c,
    BINUNICODE8 = 0x8d,
    BINBYTES8 = 0x8e,
    STACK_GLOBAL = 0x93,
    MEMOIZE = 0x94,
    FRAME = 0x95,
};

struct StorageType {
    const char* dtype;
    int64_t element_size;
};

// torch.<X>Storage -> element type. The names are the ones torch.save writes into persistent ids.
const std::map<std::string, StorageType>& storage_types() {
    static const std::map<std::string, StorageType> types{
        {"torch.FloatStorage", {"float32", 4}}, {"torch.DoubleStorage", {"float64", 8}},
        {"torch.HalfStorage", {"float16", 2}},  {"torch.BFloat16Storage", {"bfloat16", 2}},
        {"torch.LongStorage", {"int64", 8}},    {"torch.IntStorage", {"int32", 4}},
        {"torch.ShortStorage", {"int16", 2}},   {"torch.CharStorage", {"int8", 1}},
        {"torch.ByteStorage", {"uint8", 1}},    {"torch.BoolStorage", {"bool", 1}},
    };
    return types;
}

// What a hostile data.pkl may cost. A SAM state dict's pickle is ~100 kB of ~16 k opcodes with MARKs nested 3 deep
// (LiteMedSAM's: 80 kB, 15,861 opcodes); these allow ~30 times that and hold a hostile pickle to ~200 MB.
constexpr size_t kMaxObjects = size_t{1} << 19;  // ~320 bytes each
constexpr size_t kMaxPushes = size_t{1} << 22;   // values pushed in all: bounds the stack and every container
constexpr size_t kMaxMemo = size_t{1} << 19;
constexpr size_t kMaxMarks = 1000;  // nesting: Python's recursion limit keeps its pickler below this

constexpr const char* kOrderedDict = "collections.OrderedDict";
constexpr const char* kRebuildTensorV2 = "torch._utils._rebuild_tensor_v2";
constexpr const char* kRebuildTensor = "torch._utils._rebuild_tensor";
constexpr const char* kRebuildParameter = "torch._utils._rebuild_parameter";
constexpr const char* kRebuildParameterWithState = "torch._utils._rebuild_parameter_with_state";
constexpr const char* kRebuildFromType = "torch._tensor._rebuild_from_type_v2";
constexpr const char* kTensorType = "torch.Tensor";
constexpr const char* kParameterType = "torch.nn.parameter.Parameter";

bool is_allowed_global(const std::string& qualified) {
    static const char* const callables[] = {
        kOrderedDict,     kRebuildTensorV2, kRebuildTensor, kRebuildParameter, kRebuildParameterWithState,
        kRebuildFromType, kTensorType,      kParameterType};
    for (const char* allowed : callables)
        if (qualified == allowed) return true;
    return storage_types().count(qualified) > 0;
}

std::string byte_hex(uint8_t value) {
    static const char digits[] = "0123456789abcdef";
    return std::string("0x") + digits[value >> 4] + digits[value & 15];
}

// Bounds-checked little-endian reads over the pickle bytes.
class Reader {
public:
    Reader(std::string_view bytes, const std::string& file) : bytes_(bytes), file_(file) {}

    size_t position() const { return pos_; }
    uint8_t byte() { return static_cast<uint8_t>(take(1)[0]); }
    std::string_view take(uint64_t count) {
        if (count > bytes_.size() - pos_) fail("data.pkl is truncated (a pickle opcode runs past its end)");
        std::string_view out = bytes_.substr(pos_, count);
        pos_ += count;
        return out;
    }
    uint64_t unsigned_le(int width) {
        std::string_view raw = take(width);
        uint64_t value = 0;
        for (int i = width - 1; i >= 0; --i) value = (value << 8) | static_cast<uint8_t>(raw[i]);
        return value;
    }
    // Two's complement little-endian integer of up to 8 bytes (LONG1 / LONG4 payloads).
    int64_t signed_le(uint64_t width) {
        if (width > 8) fail("integer in data.pkl is wider than 64 bits");
        if (width == 0) return 0;
        uint64_t value = unsigned_le(static_cast<int>(width));
        if (width < 8 && (value >> (8 * width - 1)) & 1) value |= ~uint64_t{0} << (8 * width);
        return static_cast<int64_t>(value);
    }
    std::string line() {
        size_t end = bytes_.find('\n', pos_);
        if (end == std::string_view::npos) fail("data.pkl is truncated (a GLOBAL name has no end)");
        std::string out(bytes_.substr(pos_, end - pos_));
        pos_ = end + 1;
        return out;
    }

private:
    [[noreturn]] void fail(const std::string& problem) const { throw Error(file_, problem); }

    std::string_view bytes_;
    size_t pos_ = 0;
    const std::string& file_;
};

}  // namespace

std::string kind_name(Object::Kind kind) {
    switch (kind) {
        case Kind::None: return "None";
        case Kind::Bool: return "bool";
        case Kind::Int: return "int";
        case Kind::Float: return "float";
        case Kind::String: return "str";
        case Kind::Tuple: return "tuple";
        case Kind::List: return "list";
        case Kind::Dict: return "dict";
        case Kind::Global: return "global";
        case Kind::Storage: return "storage";
        case Kind::Tensor: return "tensor";
    }
    return "?";
}

Unpickler::Unpickler(std::string file) : file_(std::move(file)) {}

void Unpickler::fail(const std::string& problem) const { throw Error(file_, problem); }

Ref Unpickler::make(Object::Kind kind) {
    if (arena_.size() >= kMaxObjects)
        fail("data.pkl builds more than " + std::to_string(kMaxObjects) +
             " objects, far more than a state dict needs; refusing it");
    arena_.emplace_back();
    arena_.back().kind = kind;
    return &arena_.back();
}

Ref Unpickler::resolve_global(const std::string& module, const std::string& name) {
    std::string qualified = module + "." + name;
    if (!is_allowed_global(qualified))
        fail("refusing to load: data.pkl names the global '" + qualified +
             "', which a plain state dict of tensors never needs (only torch tensors, storages and "
             "collections.OrderedDict are accepted; nothing in the file is executed). If it is a whole pickled "
             "model, re-save its weights with torch.save(model.state_dict(), path)");
    Ref global = make(Kind::Global);
    global->text = std::move(qualified);
    return global;
}

Ref Unpickler::persistent_load(Ref pid) {
    // ('storage', storage_type, key, location, numel) is the only persistent id torch.save writes.
    const auto& id = pid->items;
    if (pid->kind != Kind::Tuple || id.size() != 5 || id[0]->kind != Kind::String || id[0]->text != "storage" ||
        id[1]->kind != Kind::Global || id[2]->kind != Kind::String || id[4]->kind != Kind::Int)
        fail("data.pkl has a persistent id that is not a torch storage reference");
    auto type = storage_types().find(id[1]->text);
    if (type == storage_types().end())
        fail("data.pkl names '" + id[1]->text + "' as a storage type; it is not a torch storage");
    if (id[4]->integer < 0) fail("storage '" + id[2]->text + "' has a negative size");
    Ref storage = make(Kind::Storage);
    storage->storage = {id[2]->text, type->second.dtype, type->second.element_size, id[4]->integer};
    return storage;
}

Ref Unpickler::reduce(Ref callable, Ref args) {
    if (callable->kind != Kind::Global || args->kind != Kind::Tuple)
        fail("data.pkl applies a " + kind_name(callable->kind) + " to a " + kind_name(args->kind) +
             "; only allowed globals applied to tuples are accepted");
    const std::string& name = callable->text;
    const auto& a = args->items;
    if (name == kOrderedDict) {
        if (!a.empty()) fail("data.pkl builds an OrderedDict from arguments; only OrderedDict() is accepted");
        return make(Kind::Dict);
    }
    if (name == kRebuildTensorV2 || name == kRebuildTensor) {
        // (storage, storage_offset, size, stride, [requires_grad, backward_hooks, metadata]); the rest is unused.
        if (a.size() < 4 || a[0]->kind != Kind::Storage || a[1]->kind != Kind::Int || a[2]->kind != Kind::Tuple ||
            a[3]->kind != Kind::Tuple || a[2]->items.size() != a[3]->items.size())
            fail("data.pkl has a malformed tensor record (" + name + ")");
        Ref tensor = make(Kind::Tensor);
        tensor->tensor.storage = a[0]->storage;
        tensor->tensor.storage_offset = a[1]->integer;
        for (size_t d = 0; d < a[2]->items.size(); ++d) {
            Ref size = a[2]->items[d], stride = a[3]->items[d];
            if (size->kind != Kind::Int || stride->kind != Kind::Int || size->integer < 0 || stride->integer < 0)
                fail("data.pkl has a tensor with a non-integer or negative size or stride");
            tensor->tensor.shape.push_back(size->integer);
            tensor->tensor.stride.push_back(stride->integer);
        }
        if (tensor->tensor.storage_offset < 0) fail("data.pkl has a tensor with a negative storage offset");
        return tensor;
    }
    if (name == kRebuildParameter || name == kRebuildParameterWithState) {
        if (a.empty() || a[0]->kind != Kind::Tensor) fail("data.pkl has a malformed parameter record");
        return a[0];
    }
    if (name == kRebuildFromType) {
        // (rebuild function, tensor type, its args, python state): used for Parameter and tensor subclasses.
        if (a.size() != 4 || a[0]->kind != Kind::Global || a[0]->text == kRebuildFromType ||
            a[1]->kind != Kind::Global || (a[1]->text != kTensorType && a[1]->text != kParameterType))
            fail("data.pkl has a malformed or unsupported tensor subclass record");
        return reduce(a[0], a[2]);
    }
    fail("data.pkl calls '" + name + "', which cannot be called while loading a state dict");
}

Ref Unpickler::load(std::string_view bytes) {
    Reader in(bytes, file_);
    std::vector<Ref> stack;
    std::vector<size_t> marks;
    std::unordered_map<uint64_t, Ref> memo;
    size_t pushes = 0;

    auto push = [&](Ref value) {
        if (++pushes > kMaxPushes)
            fail("data.pkl pushes more than " + std::to_string(kMaxPushes) +
                 " values, far more than a state dict needs; refusing it");
        stack.push_back(value);
    };
    auto pop = [&]() {
        if (stack.empty() || (!marks.empty() && stack.size() <= marks.back()))
            fail("data.pkl is malformed (pickle stack underflow at byte " + std::to_string(in.position()) + ")");
        Ref top = stack.back();
        stack.pop_back();
        return top;
    };
    auto top = [&]() {
        Ref value = pop();
        stack.push_back(value);  // back where it was: not a new value
        return value;
    };
    auto pop_mark = [&]() {
        if (marks.empty()) fail("data.pkl is malformed (no MARK before byte " + std::to_string(in.position()) + ")");
        size_t start = marks.back();
        marks.pop_back();
        std::vector<Ref> items(stack.begin() + static_cast<std::ptrdiff_t>(start), stack.end());
        stack.resize(start);
        return items;
    };
    auto push_string = [&](std::string_view text) {
        Ref value = make(Kind::String);
        value->text = std::string(text);
        push(value);
    };
    auto push_int = [&](int64_t integer) {
        Ref value = make(Kind::Int);
        value->integer = integer;
        push(value);
    };
    auto push_tuple = [&](std::vector<Ref> items) {
        Ref value = make(Kind::Tuple);
        value->items = std::move(items);
        push(value);
    };
    auto expect = [&](Ref value, Kind kind, const char* opcode) {
        if (value->kind != kind)
            fail(std::string("data.pkl is malformed (") + opcode + " on a " + kind_name(value->kind) + ")");
        return value;
    };
    auto set_items = [&](Ref dict, const std::vector<Ref>& flat) {
        if (flat.size() % 2) fail("data.pkl is malformed (SETITEMS with an odd number of items)");
        expect(dict, Kind::Dict, "SETITEMS");
        for (size_t i = 0; i < flat.size(); i += 2) dict->entries.emplace_back(flat[i], flat[i + 1]);
    };
    auto memo_put = [&](uint64_t index) {
        if (memo.size() >= kMaxMemo && !memo.count(index))
            fail("data.pkl memoizes more than " + std::to_string(kMaxMemo) + " values; refusing it");
        memo[index] = top();
    };
    auto memo_get = [&](uint64_t index) {
        auto found = memo.find(index);
        if (found == memo.end()) fail("data.pkl is malformed (memo entry " + std::to_string(index) + " unset)");
        push(found->second);
    };

    for (;;) {
        const uint8_t opcode = in.byte();
        switch (opcode) {
            case PROTO: {
                uint8_t version = in.byte();
                if (version < 2 || version > 5)
                    fail("data.pkl uses pickle protocol " + std::to_string(version) + "; 2 to 5 are supported");
                break;
            }
            case FRAME: in.take(8); break;  // framing is only a read-ahead hint
            case STOP: {
                Ref result = pop();
                if (!marks.empty()) fail("data.pkl is malformed (unclosed MARK at STOP)");
                return result;
            }
            case MARK:
                if (marks.size() >= kMaxMarks)
                    fail("data.pkl nests deeper than " + std::to_string(kMaxMarks) + " levels; refusing it");
                marks.push_back(stack.size());
                break;
            case POP: pop(); break;
            case POP_MARK: pop_mark(); break;
            case DUP: push(top()); break;
            case NONE: push(make(Kind::None)); break;
            case NEWTRUE:
            case NEWFALSE: {
                Ref value = make(Kind::Bool);
                value->boolean = opcode == NEWTRUE;
                push(value);
                break;
            }
            case BININT: push_int(static_cast<int32_t>(in.unsigned_le(4))); break;
            case BININT1: push_int(in.byte()); break;
            case BININT2: push_int(static_cast<int64_t>(in.unsigned_le(2))); break;
            case LONG1: push_int(in.signed_le(in.byte())); break;
            case LONG4: push_int(in.signed_le(in.unsigned_le(4))); break;
            case BINFLOAT: {
                uint64_t bits = 0;  // big-endian IEEE double
                for (char c : in.take(8)) bits = (bits << 8) | static_cast<uint8_t>(c);
                Ref value = make(Kind::Float);
                std::memcpy(&value->real, &bits, sizeof bits);
                push(value);
                break;
            }
            case SHORT_BINUNICODE:
            case SHORT_BINSTRING:
            case SHORT_BINBYTES: push_string(in.take(in.byte())); break;
            case BINUNICODE:
            case BINSTRING:
            case BINBYTES: push_string(in.take(in.unsigned_le(4))); break;
            case BINUNICODE8:
            case BINBYTES8: push_string(in.take(in.unsigned_le(8))); break;
            case EMPTY_TUPLE: push_tuple({}); break;
            case TUPLE1:
            case TUPLE2:
            case TUPLE3: {
                std::vector<Ref> items(opcode - TUPLE1 + 1);
                for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
                push_tuple(std::move(items));
                break;
            }
            case TUPLE: push_tuple(pop_mark()); break;
            case EMPTY_LIST: push(make(Kind::List)); break;
            case LIST: {
                Ref list = make(Kind::List);
                list->items = pop_mark();
                push(list);
                break;
            }
            case APPEND: {
                Ref value = pop();
                expect(top(), Kind::List, "APPEND")->items.push_back(value);
                break;
            }
            case APPENDS: {
                std::vector<Ref> values = pop_mark();
                Ref list = expect(top(), Kind::List, "APPENDS");
                list->items.insert(list->items.end(), values.begin(), values.end());
                break;
            }
            case EMPTY_DICT: push(make(Kind::Dict)); break;
            case DICT: {
                Ref dict = make(Kind::Dict);
                set_items(dict, pop_mark());
                push(dict);
                break;
            }
            case SETITEM: {
                Ref value = pop();
                Ref key = pop();
                set_items(top(), {key, value});
                break;
            }
            case SETITEMS: {
                std::vector<Ref> flat = pop_mark();
                set_items(top(), flat);
                break;
            }
            case BINPUT: memo_put(in.byte()); break;
            case LONG_BINPUT: memo_put(in.unsigned_le(4)); break;
            case MEMOIZE: memo_put(memo.size()); break;
            case BINGET: memo_get(in.byte()); break;
            case LONG_BINGET: memo_get(in.unsigned_le(4)); break;
            case GLOBAL: {
                std::string module = in.line();
                std::string name = in.line();
                push(resolve_global(module, name));
                break;
            }
            case STACK_GLOBAL: {
                Ref name = expect(pop(), Kind::String, "STACK_GLOBAL");
                Ref module = expect(pop(), Kind::String, "STACK_GLOBAL");
                push(resolve_global(module->text, name->text));
                break;
            }
            case REDUCE: {
                Ref args = pop();
                Ref callable = pop();
                push(reduce(callable, args));
                break;
            }
            case BUILD: {
                // Sets Python attributes (an OrderedDict's _metadata, a tensor subclass's state): not needed.
                pop();
                Ref target = top();
                if (target->kind != Kind::Dict && target->kind != Kind::Tensor)
                    fail("data.pkl sets the state of a " + kind_name(target->kind) + "; not accepted");
                break;
            }
            case BINPERSID: push(persistent_load(pop())); break;
            default:
                fail("data.pkl uses pickle opcode " + byte_hex(opcode) + " at byte " +
                     std::to_string(in.position() - 1) + ", which a torch state dict never needs");
        }
    }
}

}  // namespace sqasam::sam::pickle
