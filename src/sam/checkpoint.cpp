#include "sam/checkpoint.hpp"

#include <zip.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "sam/pickle.hpp"
#include "sqasam/error.hpp"

namespace sqasam::sam {

static_assert(std::endian::native == std::endian::little, "the readers assume a little-endian host");

namespace {

std::string shape_to_string(const std::vector<int64_t>& shape) {
    std::string out = "[";
    for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
    return out + "]";
}

// ---- element types -----------------------------------------------------------------------------------------

enum class DType { F32, F64, F16, BF16, I64, I32, I16, I8, U8, Bool };

struct DTypeInfo {
    DType type;
    const char* torch_name;        // as in pickle::StorageRef::dtype and Tensor::source_dtype
    const char* safetensors_name;  // as in a safetensors header
    int64_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "float32", "F32", 4},    {DType::F64, "float64", "F64", 8}, {DType::F16, "float16", "F16", 2},
    {DType::BF16, "bfloat16", "BF16", 2}, {DType::I64, "int64", "I64", 8},   {DType::I32, "int32", "I32", 4},
    {DType::I16, "int16", "I16", 2},      {DType::I8, "int8", "I8", 1},      {DType::U8, "uint8", "U8", 1},
    {DType::Bool, "bool", "BOOL", 1},
};

const DTypeInfo* find_dtype(const std::string& name, bool safetensors) {
    for (const DTypeInfo& info : kDTypes)
        if (name == (safetensors ? info.safetensors_name : info.torch_name)) return &info;
    return nullptr;
}

float half_to_float(uint16_t half) {
    uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
    uint32_t exponent = (half >> 10) & 0x1fu;
    uint32_t mantissa = half & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);  // inf / nan
    } else if (exponent != 0) {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {  // subnormal half: a normal float after shifting the leading 1 into the implicit bit
        exponent = 127 - 15 + 1;
        while (!(mantissa & 0x400u)) {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    return std::bit_cast<float>(bits);
}

template <class T>
T load_le(const uint8_t* p) {
    T value;
    std::memcpy(&value, p, sizeof value);
    return value;
}

// Decodes `count` consecutive little-endian elements to float32.
void decode_run(DType type, const uint8_t* src, int64_t count, float* dst) {
    switch (type) {
        case DType::F32: std::memcpy(dst, src, static_cast<size_t>(count) * 4); return;
        case DType::F64:
            for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(load_le<double>(src + 8 * i));
            return;
        case DType::F16:
            for (int64_t i = 0; i < count; ++i) dst[i] = half_to_float(load_le<uint16_t>(src + 2 * i));
            return;
        case DType::BF16:
            for (int64_t i = 0; i < count; ++i)
                dst[i] = std::bit_cast<float>(static_cast<uint32_t>(load_le<uint16_t>(src + 2 * i)) << 16);
            return;
        case DType::I64:
            for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(load_le<int64_t>(src + 8 * i));
            return;
        case DType::I32:
            for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(load_le<int32_t>(src + 4 * i));
            return;
        case DType::I16:
            for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(load_le<int16_t>(src + 2 * i));
            return;
        case DType::I8:
            for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(static_cast<int8_t>(src[i]));
            return;
        case DType::U8:
            for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(src[i]);
            return;
        case DType::Bool:
            for (int64_t i = 0; i < count; ++i) dst[i] = src[i] ? 1.0f : 0.0f;
            return;
    }
}

bool checked_mul(int64_t a, int64_t b, int64_t& out) { return !__builtin_mul_overflow(a, b, &out); }
bool checked_add(int64_t a, int64_t b, int64_t& out) { return !__builtin_add_overflow(a, b, &out); }

// Product of the dimensions, or -1 if it overflows.
int64_t checked_numel(const std::vector<int64_t>& shape) {
    int64_t numel = 1;
    for (int64_t dim : shape)
        if (dim < 0 || !checked_mul(numel, dim, numel)) return -1;
    return numel;
}

// ---- byte sources: a file on disk or a buffer in memory ------------------------------------------------------

class ByteSource {
public:
    explicit ByteSource(std::string name) : name_(std::move(name)) {}
    virtual ~ByteSource() = default;
    virtual uint64_t size() const = 0;
    virtual void read(uint64_t offset, uint64_t count, void* dst) const = 0;
    const std::string& name() const { return name_; }

private:
    std::string name_;
};

class FileSource : public ByteSource {
public:
    explicit FileSource(const std::string& path) : ByteSource(path) {
        std::error_code ec;
        if (std::filesystem::is_directory(path, ec)) throw Error(path, "is a directory, not a checkpoint file");
        stream_.open(path, std::ios::binary);
        if (!stream_) throw Error(path, std::string("cannot open checkpoint: ") + std::strerror(errno));
        stream_.seekg(0, std::ios::end);
        size_ = static_cast<uint64_t>(stream_.tellg());
    }
    uint64_t size() const override { return size_; }
    void read(uint64_t offset, uint64_t count, void* dst) const override {
        if (offset > size_ || count > size_ - offset) throw Error(name(), "unexpected end of file");
        stream_.clear();
        stream_.seekg(static_cast<std::streamoff>(offset));
        stream_.read(static_cast<char*>(dst), static_cast<std::streamsize>(count));
        if (static_cast<uint64_t>(stream_.gcount()) != count) throw Error(name(), "read failed");
    }

private:
    mutable std::ifstream stream_;
    uint64_t size_ = 0;
};

class MemorySource : public ByteSource {
public:
    MemorySource(const void* data, size_t size, const std::string& name)
        : ByteSource(name), data_(static_cast<const uint8_t*>(data)), size_(size) {}
    uint64_t size() const override { return size_; }
    void read(uint64_t offset, uint64_t count, void* dst) const override {
        if (offset > size_ || count > size_ - offset) throw Error(name(), "unexpected end of file");
        if (count) std::memcpy(dst, data_ + offset, count);
    }

private:
    const uint8_t* data_;
    uint64_t size_;
};

// ---- PyTorch zip archives --------------------------------------------------------------------------------------

struct ZipDiscard {
    void operator()(zip_t* archive) const { zip_discard(archive); }
};
struct ZipFileClose {
    void operator()(zip_file_t* file) const { zip_fclose(file); }
};
using ZipArchive = std::unique_ptr<zip_t, ZipDiscard>;

std::string zip_error_message(zip_error_t* error) {
    std::string message = zip_error_strerror(error);
    zip_error_fini(error);
    return message;
}

[[noreturn]] void throw_unreadable_zip(const std::string& file, const std::string& reason) {
    throw Error(file, "not a readable PyTorch zip archive (" + reason + "); the file may be truncated or damaged");
}

// An open torch.save archive: the zip, the file it came from (for messages) and its size in bytes.
struct Archive {
    zip_t* zip;
    const std::string& file;
    uint64_t bytes;
};

// Reads a whole entry, refusing one larger than max_bytes. An entry must not claim more bytes than the archive
// could hold (stored) or than deflate could expand it to (compressed), so a tiny hostile archive cannot make us
// allocate gigabytes.
std::vector<uint8_t> read_entry(const Archive& archive, zip_uint64_t index, uint64_t max_bytes) {
    const std::string& file = archive.file;
    const char* raw_name = zip_get_name(archive.zip, index, ZIP_FL_ENC_RAW);
    const std::string entry = raw_name ? raw_name : "#" + std::to_string(index);
    zip_stat_t stat;
    zip_stat_init(&stat);
    constexpr zip_uint64_t kNeeded = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD;
    if (zip_stat_index(archive.zip, index, 0, &stat) != 0 || (stat.valid & kNeeded) != kNeeded)
        throw_unreadable_zip(file, "cannot stat entry '" + entry + "'");
    if (stat.size > max_bytes)
        throw Error(file, "archive entry '" + entry + "' holds " + std::to_string(stat.size) +
                              " bytes, more than the " + std::to_string(max_bytes) + " expected");
    constexpr uint64_t kMaxDeflateRatio = 1100;
    const uint64_t plausible = stat.comp_method == ZIP_CM_STORE ? stat.comp_size : stat.comp_size * kMaxDeflateRatio;
    if (stat.comp_size > archive.bytes || stat.size > plausible)
        throw_unreadable_zip(file, "entry '" + entry + "' claims " + std::to_string(stat.size) +
                                       " bytes, more than the archive can hold");
    std::unique_ptr<zip_file_t, ZipFileClose> handle(zip_fopen_index(archive.zip, index, 0));
    if (!handle) throw_unreadable_zip(file, "cannot open entry '" + entry + "': " + zip_strerror(archive.zip));
    std::vector<uint8_t> bytes(stat.size);
    uint64_t done = 0;
    while (done < bytes.size()) {
        zip_int64_t got = zip_fread(handle.get(), bytes.data() + done, bytes.size() - done);
        if (got < 0) throw_unreadable_zip(file, "reading '" + entry + "': " + zip_file_strerror(handle.get()));
        if (got == 0) throw_unreadable_zip(file, "entry '" + entry + "' ends early");
        done += static_cast<uint64_t>(got);
    }
    return bytes;
}

zip_uint64_t locate(zip_t* archive, const std::string& entry, const std::string& file) {
    zip_int64_t index = zip_name_locate(archive, entry.c_str(), ZIP_FL_ENC_RAW);
    if (index < 0) throw Error(file, "archive entry '" + entry + "' is missing");
    return static_cast<zip_uint64_t>(index);
}

// torch.save names the archive's top folder after the file it wrote; the pickle is <folder>/data.pkl.
std::string find_archive_prefix(zip_t* archive, const std::string& file) {
    const std::string suffix = "data.pkl";
    std::string best;
    bool found = false;
    zip_int64_t count = zip_get_num_entries(archive, 0);
    for (zip_int64_t i = 0; i < count; ++i) {
        const char* raw = zip_get_name(archive, static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW);
        if (!raw) continue;
        std::string name = raw;
        if (name.size() < suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
            continue;
        std::string prefix = name.substr(0, name.size() - suffix.size());
        if (!prefix.empty() && prefix.back() != '/') continue;
        if (!found || prefix.size() < best.size()) best = prefix;
        found = true;
    }
    if (!found) throw Error(file, "zip archive has no data.pkl entry: not a PyTorch checkpoint");
    return best;
}

bool is_state_dict(pickle::Ref object) {
    if (object->kind != pickle::Object::Kind::Dict || object->entries.empty()) return false;
    return std::all_of(object->entries.begin(), object->entries.end(), [](const auto& entry) {
        return entry.first->kind == pickle::Object::Kind::String && entry.second->kind == pickle::Object::Kind::Tensor;
    });
}

// The state dict itself, or the one a training checkpoint wraps ({'model': state_dict, 'optimizer': ...}).
pickle::Ref find_state_dict(pickle::Ref root, const std::string& file) {
    if (is_state_dict(root)) return root;
    if (root->kind == pickle::Object::Kind::Dict) {
        for (const char* wrapper : {"model", "state_dict", "model_state_dict"})
            for (const auto& [key, value] : root->entries)
                if (key->kind == pickle::Object::Kind::String && key->text == wrapper && is_state_dict(value))
                    return value;
        pickle::Ref only = nullptr;
        int count = 0;
        for (const auto& entry : root->entries)
            if (is_state_dict(entry.second)) {
                only = entry.second;
                ++count;
            }
        if (count == 1) return only;
    }
    throw Error(file, "data.pkl holds a " + pickle::kind_name(root->kind) +
                          ", not a state dict (a dict of named tensors, or a dict holding one under 'model' or "
                          "'state_dict')");
}

// Checks a tensor view against its storage and copies it out contiguously as float32.
Tensor materialise(const std::string& key, const pickle::TensorRef& view, const std::vector<uint8_t>& storage,
                   const DTypeInfo& dtype, const std::string& file) {
    auto invalid = [&](const std::string& why) {
        return Error(file, "tensor '" + key + "' " + shape_to_string(view.shape) + " " + why);
    };
    Tensor tensor;
    tensor.shape = view.shape;
    tensor.source_dtype = dtype.torch_name;
    const int64_t numel = checked_numel(view.shape);
    if (numel < 0) throw invalid("has too many elements");
    if (numel == 0) return tensor;
    if (numel > view.storage.numel)
        throw invalid("has more elements than its storage (an expanded view); re-save it with .contiguous()");
    int64_t last = view.storage_offset;  // index of the furthest element the view touches
    for (size_t d = 0; d < view.shape.size(); ++d) {
        int64_t reach;
        if (!checked_mul(view.shape[d] - 1, view.stride[d], reach) || !checked_add(last, reach, last))
            throw invalid("has strides that overflow");
    }
    if (last >= view.storage.numel)
        throw invalid("reaches element " + std::to_string(last) + " of storage '" + view.storage.key + "', which has " +
                      std::to_string(view.storage.numel));

    tensor.data.resize(static_cast<size_t>(numel));
    const uint8_t* base = storage.data();
    bool contiguous = true;
    for (int64_t d = static_cast<int64_t>(view.shape.size()) - 1, expected = 1; d >= 0; --d) {
        if (view.shape[d] != 1 && view.stride[d] != expected) contiguous = false;
        expected *= view.shape[d];
    }
    if (contiguous) {
        decode_run(dtype.type, base + view.storage_offset * dtype.size, numel, tensor.data.data());
        return tensor;
    }
    // Walk the view in row-major order, keeping the source position in step with a multi-index.
    const int64_t rank = static_cast<int64_t>(view.shape.size());
    std::vector<int64_t> index(view.shape.size(), 0);
    int64_t position = view.storage_offset;
    for (int64_t i = 0; i < numel; ++i) {
        decode_run(dtype.type, base + position * dtype.size, 1, tensor.data.data() + i);
        for (int64_t d = rank - 1; d >= 0; --d) {
            if (++index[d] < view.shape[d]) {
                position += view.stride[d];
                break;
            }
            position -= view.stride[d] * (view.shape[d] - 1);
            index[d] = 0;
        }
    }
    return tensor;
}

void swap_bytes(std::vector<uint8_t>& bytes, int64_t element_size) {
    for (size_t i = 0; i + static_cast<size_t>(element_size) <= bytes.size(); i += static_cast<size_t>(element_size))
        std::reverse(bytes.begin() + static_cast<std::ptrdiff_t>(i),
                     bytes.begin() + static_cast<std::ptrdiff_t>(i) + element_size);
}

Checkpoint read_torch_archive(const Archive& archive) {
    const std::string& file = archive.file;
    const std::string prefix = find_archive_prefix(archive.zip, file);

    bool big_endian = false;
    if (zip_name_locate(archive.zip, (prefix + "byteorder").c_str(), ZIP_FL_ENC_RAW) >= 0) {
        std::vector<uint8_t> order = read_entry(archive, locate(archive.zip, prefix + "byteorder", file), 16);
        std::string text(order.begin(), order.end());
        if (text != "little" && text != "big") throw Error(file, "archive has an unknown byteorder '" + text + "'");
        big_endian = text == "big";
    }

    constexpr uint64_t kMaxPickleBytes = uint64_t{1} << 28;  // a SAM state dict's data.pkl is about 100 kB
    std::vector<uint8_t> pkl = read_entry(archive, locate(archive.zip, prefix + "data.pkl", file), kMaxPickleBytes);
    pickle::Unpickler unpickler(file);
    pickle::Ref root = unpickler.load(std::string_view(reinterpret_cast<const char*>(pkl.data()), pkl.size()));
    pickle::Ref state_dict = find_state_dict(root, file);

    // DataParallel saves every name under "module."; the model does not expect that.
    const std::string parallel_prefix = "module.";
    const bool strip = std::all_of(state_dict->entries.begin(), state_dict->entries.end(),
                                   [&](const auto& entry) { return entry.first->text.rfind(parallel_prefix, 0) == 0; });

    // Read each storage once and cut all its tensors out of it before reading the next, so at most one raw
    // storage is held beside the converted tensors.
    std::map<std::string, std::vector<std::pair<std::string, const pickle::TensorRef*>>> by_storage;
    for (const auto& [key, value] : state_dict->entries)
        by_storage[value->tensor.storage.key].emplace_back(strip ? key->text.substr(parallel_prefix.size()) : key->text,
                                                           &value->tensor);

    Checkpoint checkpoint;
    checkpoint.path = file;
    for (const auto& [storage_key, views] : by_storage) {
        const pickle::StorageRef& storage = views.front().second->storage;
        int64_t expected_bytes;
        if (!checked_mul(storage.numel, storage.element_size, expected_bytes))
            throw Error(file, "storage '" + storage_key + "' claims an impossible size");
        for (const auto& view : views)
            if (view.second->storage.dtype != storage.dtype || view.second->storage.numel != storage.numel)
                throw Error(file, "storage '" + storage_key + "' is described inconsistently in data.pkl");
        const std::string entry = prefix + "data/" + storage_key;
        std::vector<uint8_t> bytes =
            read_entry(archive, locate(archive.zip, entry, file), static_cast<uint64_t>(expected_bytes));
        if (bytes.size() != static_cast<uint64_t>(expected_bytes))
            throw Error(file, "storage '" + entry + "' holds " + std::to_string(bytes.size()) +
                                  " bytes, but data.pkl says " + std::to_string(storage.numel) + " " + storage.dtype +
                                  " elements (" + std::to_string(expected_bytes) +
                                  " bytes); the file may be truncated");
        const DTypeInfo* dtype = find_dtype(storage.dtype, false);
        if (big_endian) swap_bytes(bytes, dtype->size);
        for (const auto& [key, view] : views) checkpoint.tensors[key] = materialise(key, *view, bytes, *dtype, file);
    }
    return checkpoint;
}

// ---- safetensors -------------------------------------------------------------------------------------------------

Checkpoint read_safetensors(const ByteSource& source) {
    const std::string& file = source.name();
    auto invalid = [&](const std::string& why) { return Error(file, "invalid safetensors file: " + why); };
    if (source.size() < 8) throw invalid("shorter than its 8-byte header length");
    uint64_t header_size;
    source.read(0, 8, &header_size);
    constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
    if (header_size > source.size() - 8 || header_size > kMaxHeaderBytes)
        throw invalid("header length " + std::to_string(header_size) + " runs past the end of the file");
    std::string text(header_size, '\0');
    source.read(8, header_size, text.data());
    nlohmann::json header;
    try {
        header = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw invalid(std::string("header is not JSON (") + e.what() + ")");
    }
    if (!header.is_object()) throw invalid("header is not a JSON object");

    const uint64_t data_start = 8 + header_size;
    const uint64_t data_size = source.size() - data_start;
    Checkpoint checkpoint;
    checkpoint.path = file;
    for (const auto& item : header.items()) {
        const std::string key = item.key();  // a named copy, since lambdas cannot capture structured bindings
        const nlohmann::json& info = item.value();
        if (key == "__metadata__") continue;
        auto bad = [&](const std::string& why) { return invalid("tensor '" + key + "' " + why); };
        if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets"))
            throw bad("needs dtype, shape and data_offsets");
        const nlohmann::json& dtype_name = info["dtype"];
        const DTypeInfo* dtype = dtype_name.is_string() ? find_dtype(dtype_name.get<std::string>(), true) : nullptr;
        if (!dtype) throw bad("has an unsupported dtype " + dtype_name.dump());
        Tensor tensor;
        tensor.source_dtype = dtype->torch_name;
        const nlohmann::json& shape = info["shape"];
        if (!shape.is_array()) throw bad("has a shape that is not a list");
        for (const auto& dim : shape) {
            if (!dim.is_number_unsigned() || dim.get<uint64_t>() > (uint64_t{1} << 40))
                throw bad("has an invalid dimension " + dim.dump());
            tensor.shape.push_back(dim.get<int64_t>());
        }
        const nlohmann::json& offsets = info["data_offsets"];
        if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
            !offsets[1].is_number_unsigned())
            throw bad("has invalid data_offsets " + offsets.dump());
        const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
        const int64_t numel = checked_numel(tensor.shape);
        int64_t bytes;
        if (numel < 0 || !checked_mul(numel, dtype->size, bytes)) throw bad("has too many elements");
        if (begin > end || end > data_size)
            throw bad("has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] outside the " +
                      std::to_string(data_size) + " data bytes");
        if (end - begin != static_cast<uint64_t>(bytes))
            throw bad("has " + std::to_string(end - begin) + " data bytes, but its shape " +
                      shape_to_string(tensor.shape) + " of " + dtype->safetensors_name + " needs " +
                      std::to_string(bytes));
        tensor.data.resize(static_cast<size_t>(numel));
        if (dtype->type == DType::F32) {
            source.read(data_start + begin, static_cast<uint64_t>(bytes), tensor.data.data());
        } else {
            std::vector<uint8_t> raw(static_cast<size_t>(bytes));
            source.read(data_start + begin, raw.size(), raw.data());
            decode_run(dtype->type, raw.data(), numel, tensor.data.data());
        }
        checkpoint.tensors[key] = std::move(tensor);
    }
    if (checkpoint.tensors.empty()) throw invalid("it holds no tensors");
    return checkpoint;
}

// ---- format detection --------------------------------------------------------------------------------------------

enum class Format { TorchZip, Safetensors };

Format detect_format(const ByteSource& source) {
    const std::string& file = source.name();
    uint8_t head[16] = {};
    const uint64_t size = source.size();
    source.read(0, std::min<uint64_t>(size, sizeof head), head);
    if (size == 0) throw Error(file, "checkpoint file is empty");
    if (size >= 4 && head[0] == 'P' && head[1] == 'K' &&
        ((head[2] == 3 && head[3] == 4) || (head[2] == 5 && head[3] == 6)))
        return Format::TorchZip;
    // Safetensors before the pickle check: its 8-byte header length may well start with the byte 0x80.
    if (size >= 9) {
        uint64_t header_size;
        std::memcpy(&header_size, head, 8);
        if (header_size >= 2 && header_size <= size - 8 && head[8] == '{') return Format::Safetensors;
    }
    if (head[0] == 0x80) {
        // torch.save before 1.6 wrote a bare pickle stream starting with the magic number 0x1950a86a20f9469cfc6c.
        static const uint8_t legacy_magic[] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
        if (size >= 14 && std::memcmp(head + 2, legacy_magic, sizeof legacy_magic) == 0)
            throw Error(file,
                        "legacy PyTorch checkpoint (saved by torch < 1.6, not a zip archive); re-save it with a "
                        "newer torch: torch.save(torch.load(old_path), new_path)");
        throw Error(file, "a bare Python pickle, not a PyTorch zip checkpoint; refusing to read it");
    }
    throw Error(file,
                "unrecognised checkpoint format: expected a PyTorch .pth/.pt zip archive (torch.save, "
                "torch >= 1.6) or a .safetensors file");
}

Checkpoint load_torch_zip_from_memory(const void* data, size_t size, const std::string& name) {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* source = zip_source_buffer_create(data, size, 0, &error);
    if (!source) throw_unreadable_zip(name, zip_error_message(&error));
    zip_t* archive = zip_open_from_source(source, ZIP_RDONLY, &error);
    if (!archive) {
        zip_source_free(source);
        throw_unreadable_zip(name, zip_error_message(&error));
    }
    zip_error_fini(&error);
    ZipArchive owner(archive);
    return read_torch_archive({archive, name, size});
}

}  // namespace

int64_t Tensor::numel() const { return checked_numel(shape); }

std::string Tensor::shape_string() const { return shape_to_string(shape); }

const Tensor& Checkpoint::get(const std::string& name, const std::vector<int64_t>& expected_shape) const {
    auto found = tensors.find(name);
    if (found == tensors.end())
        throw Error(path, "missing tensor '" + name + "' (expected shape " + shape_to_string(expected_shape) + ")");
    if (found->second.shape != expected_shape)
        throw Error(path, "tensor '" + name + "' has shape " + found->second.shape_string() + ", expected " +
                              shape_to_string(expected_shape));
    return found->second;
}

bool Checkpoint::has(const std::string& name) const { return tensors.count(name) > 0; }

Checkpoint load_torch_zip(const std::string& path) {
    FileSource probe(path);  // clear errors for a missing file or a directory, and the archive's size
    int code = 0;
    ZipArchive archive(zip_open(path.c_str(), ZIP_RDONLY, &code));
    if (!archive) {
        zip_error_t error;
        zip_error_init_with_code(&error, code);
        throw_unreadable_zip(path, zip_error_message(&error));
    }
    return read_torch_archive({archive.get(), path, probe.size()});
}

Checkpoint load_safetensors(const std::string& path) { return read_safetensors(FileSource(path)); }

Checkpoint load_checkpoint(const std::string& path) {
    FileSource source(path);
    if (detect_format(source) == Format::Safetensors) return read_safetensors(source);
    return load_torch_zip(path);
}

Checkpoint load_checkpoint_from_memory(const void* data, size_t size, const std::string& name) {
    MemorySource source(data, size, name);
    if (detect_format(source) == Format::Safetensors) return read_safetensors(source);
    return load_torch_zip_from_memory(data, size, name);
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors) {
    nlohmann::json header = nlohmann::json::object();
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t offset = 0;
    for (const auto& [name, tensor] : tensors) {
        if (tensor.numel() < 0 || tensor.data.size() != static_cast<size_t>(tensor.numel()))
            throw Error(path, "cannot save tensor '" + name + "': " + std::to_string(tensor.data.size()) +
                                  " values for shape " + tensor.shape_string());
        const uint64_t bytes = tensor.data.size() * sizeof(float);
        header[name] = {{"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // keeps the tensor data 8-byte aligned, as the format advises
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(path, std::string("cannot write safetensors file: ") + std::strerror(errno));
    const uint64_t header_size = text.size();
    out.write(reinterpret_cast<const char*>(&header_size), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& entry : tensors)
        out.write(reinterpret_cast<const char*>(entry.second.data.data()),
                  static_cast<std::streamsize>(entry.second.data.size() * sizeof(float)));
    out.close();
    if (!out) throw Error(path, "writing the safetensors file failed (disk full?)");
}

}  // namespace sqasam::sam
