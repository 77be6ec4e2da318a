#include "sam/checkpoint.hpp"

#include <sys/stat.h>
#include <zip.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
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

// ---- byte sources: a file on disk or a copy of bytes in memory --------------------------------------------------

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
        // Checked before opening: opening a FIFO would wait for a writer forever.
        struct stat info {};
        if (::stat(path.c_str(), &info) != 0)
            throw Error(path, std::string("cannot open checkpoint: ") + std::strerror(errno));
        if (S_ISDIR(info.st_mode)) throw Error(path, "is a directory, not a checkpoint file");
        if (!S_ISREG(info.st_mode))
            throw Error(path, "is not a regular file (a FIFO, socket or device); a checkpoint must be a file");
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
        if (static_cast<uint64_t>(stream_.gcount()) != count)
            throw Error(name(), "read failed (the file may have been truncated since it was opened)");
    }

private:
    mutable std::ifstream stream_;
    uint64_t size_ = 0;
};

class MemorySource : public ByteSource {
public:
    MemorySource(const void* data, size_t size, const std::string& name)
        : ByteSource(name), bytes_(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + size) {}
    uint64_t size() const override { return bytes_.size(); }
    void read(uint64_t offset, uint64_t count, void* dst) const override {
        if (offset > bytes_.size() || count > bytes_.size() - offset) throw Error(name(), "unexpected end of file");
        if (count) std::memcpy(dst, bytes_.data() + offset, count);
    }
    const uint8_t* data() const { return bytes_.data(); }

private:
    std::vector<uint8_t> bytes_;
};

// ---- stores: where loaded tensors read their bytes from -------------------------------------------------------

// An open checkpoint that hands out byte ranges of its storages (zip entries, or spans of a safetensors file).
// Reads are serialised: the zip handle and the file stream underneath are not thread-safe.
class Store {
public:
    explicit Store(std::string file) : file_(std::move(file)) {}
    virtual ~Store() = default;
    const std::string& file() const { return file_; }
    // Copies `count` bytes, starting `offset` bytes into storage `storage`, to dst; throws sqasam::Error.
    void read(uint64_t storage, uint64_t offset, uint64_t count, void* dst) const {
        std::lock_guard<std::mutex> lock(mutex_);
        read_unlocked(storage, offset, count, dst);
    }

private:
    virtual void read_unlocked(uint64_t storage, uint64_t offset, uint64_t count, void* dst) const = 0;
    std::string file_;
    mutable std::mutex mutex_;
};

// A safetensors file: a storage is the byte offset of a tensor's data in the file.
class SafetensorsStore : public Store {
public:
    explicit SafetensorsStore(std::shared_ptr<const ByteSource> source)
        : Store(source->name()), source_(std::move(source)) {}

private:
    void read_unlocked(uint64_t storage, uint64_t offset, uint64_t count, void* dst) const override {
        source_->read(storage + offset, count, dst);
    }
    std::shared_ptr<const ByteSource> source_;
};

// ---- PyTorch zip archives --------------------------------------------------------------------------------------

struct ZipDiscard {
    void operator()(zip_t* archive) const { zip_discard(archive); }
};
struct ZipFileClose {
    void operator()(zip_file_t* file) const { zip_fclose(file); }
};
using ZipArchive = std::unique_ptr<zip_t, ZipDiscard>;
using ZipFile = std::unique_ptr<zip_file_t, ZipFileClose>;

std::string zip_error_message(zip_error_t* error) {
    std::string message = zip_error_strerror(error);
    zip_error_fini(error);
    return message;
}

[[noreturn]] void throw_unreadable_zip(const std::string& file, const std::string& reason) {
    throw Error(file, "not a readable PyTorch zip archive (" + reason + "); the file may be truncated or damaged");
}

// An open torch.save archive: a storage is a zip entry index.
class ZipStore : public Store {
public:
    static std::shared_ptr<const ZipStore> open_file(const std::string& path) {
        FileSource probe(path);  // clear errors for a missing file or a directory, and the archive's size
        int code = 0;
        ZipArchive archive(zip_open(path.c_str(), ZIP_RDONLY, &code));
        if (!archive) {
            zip_error_t error;
            zip_error_init_with_code(&error, code);
            throw_unreadable_zip(path, zip_error_message(&error));
        }
        return std::shared_ptr<const ZipStore>(new ZipStore(path, probe.size(), std::move(archive), nullptr));
    }
    static std::shared_ptr<const ZipStore> open_memory(std::shared_ptr<const MemorySource> bytes) {
        const std::string& name = bytes->name();
        zip_error_t error;
        zip_error_init(&error);
        zip_source_t* source = zip_source_buffer_create(bytes->data(), bytes->size(), 0, &error);
        if (!source) throw_unreadable_zip(name, zip_error_message(&error));
        ZipArchive archive(zip_open_from_source(source, ZIP_RDONLY, &error));
        if (!archive) {
            zip_source_free(source);
            throw_unreadable_zip(name, zip_error_message(&error));
        }
        zip_error_fini(&error);
        const uint64_t size = bytes->size();
        return std::shared_ptr<const ZipStore>(new ZipStore(name, size, std::move(archive), std::move(bytes)));
    }

    zip_t* zip() const { return zip_.get(); }

    std::string entry_name(zip_uint64_t index) const {
        const char* raw = zip_get_name(zip_.get(), index, ZIP_FL_ENC_RAW);
        if (raw) return raw;
        std::string numbered = "#";  // appended, not operator+: GCC 12 warns falsely (-Wrestrict) about that
        return numbered += std::to_string(index);
    }

    // The entry's sizes and compression, after checking that it could be what it claims: an entry must not claim
    // more bytes than the archive could hold (stored) or than deflate could expand it to (compressed), so a tiny
    // hostile archive cannot make us allocate gigabytes.
    zip_stat_t stat_entry(zip_uint64_t index) const {
        zip_stat_t stat;
        zip_stat_init(&stat);
        constexpr zip_uint64_t kNeeded = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD;
        if (zip_stat_index(zip_.get(), index, 0, &stat) != 0 || (stat.valid & kNeeded) != kNeeded)
            throw_unreadable_zip(file(), "cannot stat entry '" + entry_name(index) + "'");
        constexpr uint64_t kMaxDeflateRatio = 1100;
        const uint64_t plausible =
            stat.comp_method == ZIP_CM_STORE ? stat.comp_size : stat.comp_size * kMaxDeflateRatio;
        if (stat.comp_size > bytes_ || stat.size > plausible)
            throw_unreadable_zip(file(), "entry '" + entry_name(index) + "' claims " + std::to_string(stat.size) +
                                            " bytes, more than the archive can hold");
        return stat;
    }

private:
    ZipStore(std::string file, uint64_t bytes, ZipArchive zip, std::shared_ptr<const MemorySource> memory)
        : Store(std::move(file)), memory_(std::move(memory)), zip_(std::move(zip)), bytes_(bytes) {}

    // The first read of an entry streams all of it, so that libzip checks its CRC-32 when the entry ends (a damaged
    // weight is an error, not a silently different score); later reads of a checked entry take only their range.
    void read_unlocked(uint64_t storage, uint64_t offset, uint64_t count, void* dst) const override {
        const std::string entry = entry_name(storage);
        const zip_stat_t stat = stat_entry(storage);
        if (offset > stat.size || count > stat.size - offset)
            throw_unreadable_zip(file(), "entry '" + entry + "' is shorter than the data read from it");
        const bool check_crc = !crc_checked_.count(storage);
        ZipFile handle(zip_fopen_index(zip_.get(), storage, 0));
        if (!handle) throw_unreadable_zip(file(), "cannot open entry '" + entry + "': " + zip_strerror(zip_.get()));
        auto read_exactly = [&](uint8_t* out, uint64_t count_left) {
            while (count_left > 0) {
                const zip_int64_t got = zip_fread(handle.get(), out, count_left);
                if (got < 0)
                    throw_unreadable_zip(file(), "reading '" + entry + "': " + zip_file_strerror(handle.get()));
                if (got == 0) throw_unreadable_zip(file(), "entry '" + entry + "' ends early");
                out += got;
                count_left -= static_cast<uint64_t>(got);
            }
        };
        auto skip = [&](uint64_t bytes) {  // read and drop
            std::vector<uint8_t> skipped(std::min<uint64_t>(bytes, uint64_t{1} << 16));
            for (uint64_t left = bytes; left > 0;) {
                const uint64_t chunk = std::min<uint64_t>(left, skipped.size());
                read_exactly(skipped.data(), chunk);
                left -= chunk;
            }
        };
        if (offset > 0 && stat.comp_method == ZIP_CM_STORE && !check_crc) {
            if (zip_fseek(handle.get(), static_cast<zip_int64_t>(offset), SEEK_SET) != 0)
                throw_unreadable_zip(file(), "seeking in '" + entry + "': " + zip_file_strerror(handle.get()));
        } else {  // a compressed entry cannot seek, and the CRC covers every byte
            skip(offset);
        }
        read_exactly(static_cast<uint8_t*>(dst), count);
        if (!check_crc) return;
        skip(stat.size - offset - count);
        uint8_t past_end;
        const zip_int64_t got = zip_fread(handle.get(), &past_end, 1);  // at the end: libzip compares the CRC
        if (got < 0) throw_unreadable_zip(file(), "reading '" + entry + "': " + zip_file_strerror(handle.get()));
        if (got > 0) throw_unreadable_zip(file(), "entry '" + entry + "' is longer than its directory record says");
        crc_checked_.insert(storage);
    }

    std::shared_ptr<const MemorySource> memory_;  // the bytes an in-memory archive reads; outlives zip_
    ZipArchive zip_;
    uint64_t bytes_;
    mutable std::set<uint64_t> crc_checked_;  // entries read whole once (guarded by Store's lock)
};

// Reads a whole entry, refusing one larger than max_bytes.
std::vector<uint8_t> read_entry(const ZipStore& archive, zip_uint64_t index, uint64_t max_bytes) {
    const zip_stat_t stat = archive.stat_entry(index);
    if (stat.size > max_bytes)
        throw Error(archive.file(), "archive entry '" + archive.entry_name(index) + "' holds " +
                                        std::to_string(stat.size) + " bytes, more than the " +
                                        std::to_string(max_bytes) + " expected");
    std::vector<uint8_t> bytes(stat.size);
    archive.read(index, 0, bytes.size(), bytes.data());
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

}  // namespace

// A tensor as a view of one storage in an open store; its bytes were checked to lie inside the storage when the
// checkpoint was indexed.
struct TensorLocation {
    std::shared_ptr<const Store> store;
    uint64_t storage = 0;            // the store's storage: a zip entry index, or a safetensors data offset
    const DTypeInfo* dtype = nullptr;
    bool big_endian = false;
    std::vector<int64_t> shape;
    std::vector<int64_t> stride;     // in elements, per dimension
    int64_t storage_offset = 0;      // the view's first element in the storage
    int64_t span = 0;                // elements from the first to the furthest one the view touches, inclusive
};

namespace {

std::vector<int64_t> row_major_strides(const std::vector<int64_t>& shape) {
    std::vector<int64_t> stride(shape.size());
    int64_t step = 1;
    for (size_t d = shape.size(); d-- > 0;) {
        stride[d] = step;
        step *= shape[d];
    }
    return stride;
}

bool is_row_major(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
    int64_t expected = 1;
    for (size_t d = shape.size(); d-- > 0;) {
        if (shape[d] != 1 && stride[d] != expected) return false;
        expected *= shape[d];
    }
    return true;
}

void swap_bytes(std::vector<uint8_t>& bytes, int64_t element_size) {
    for (size_t i = 0; i + static_cast<size_t>(element_size) <= bytes.size(); i += static_cast<size_t>(element_size))
        std::reverse(bytes.begin() + static_cast<std::ptrdiff_t>(i),
                     bytes.begin() + static_cast<std::ptrdiff_t>(i) + element_size);
}

// Reads the bytes a view touches and copies the view out contiguously as float32.
std::vector<float> read_values(const TensorLocation& where) {
    const int64_t numel = checked_numel(where.shape);  // checked when indexed
    std::vector<float> values(static_cast<size_t>(numel));
    if (numel == 0) return values;
    const DTypeInfo& dtype = *where.dtype;
    const uint64_t first_byte = static_cast<uint64_t>(where.storage_offset * dtype.size);
    const uint64_t bytes = static_cast<uint64_t>(where.span * dtype.size);
    const bool contiguous = is_row_major(where.shape, where.stride);
    if (contiguous && dtype.type == DType::F32 && !where.big_endian) {  // the file's bytes are the values
        where.store->read(where.storage, first_byte, bytes, values.data());
        return values;
    }
    std::vector<uint8_t> raw(bytes);
    where.store->read(where.storage, first_byte, bytes, raw.data());
    if (where.big_endian) swap_bytes(raw, dtype.size);
    if (contiguous) {
        decode_run(dtype.type, raw.data(), numel, values.data());
        return values;
    }
    // Walk the view in row-major order, keeping the source position in step with a multi-index.
    const int64_t rank = static_cast<int64_t>(where.shape.size());
    std::vector<int64_t> index(where.shape.size(), 0);
    int64_t position = 0;
    for (int64_t i = 0; i < numel; ++i) {
        decode_run(dtype.type, raw.data() + position * dtype.size, 1, values.data() + i);
        for (int64_t d = rank - 1; d >= 0; --d) {
            if (++index[d] < where.shape[d]) {
                position += where.stride[d];
                break;
            }
            position -= where.stride[d] * (where.shape[d] - 1);
            index[d] = 0;
        }
    }
    return values;
}

// Checks a tensor view against its storage and indexes it; the values stay in the store.
Tensor index_view(const std::string& key, const pickle::TensorRef& view, const DTypeInfo& dtype,
                  std::shared_ptr<const Store> store, uint64_t storage, bool big_endian, const std::string& file) {
    auto invalid = [&](const std::string& why) {
        return Error(file, "tensor '" + key + "' " + shape_to_string(view.shape) + " " + why);
    };
    const int64_t numel = checked_numel(view.shape);
    if (numel < 0) throw invalid("has too many elements");
    int64_t last = view.storage_offset;  // index of the furthest element the view touches
    if (numel > 0) {
        if (numel > view.storage.numel)
            throw invalid("has more elements than its storage (an expanded view); re-save it with .contiguous()");
        for (size_t d = 0; d < view.shape.size(); ++d) {
            int64_t reach;
            if (!checked_mul(view.shape[d] - 1, view.stride[d], reach) || !checked_add(last, reach, last))
                throw invalid("has strides that overflow");
        }
        if (last >= view.storage.numel)
            throw invalid("reaches element " + std::to_string(last) + " of storage '" + view.storage.key +
                          "', which has " + std::to_string(view.storage.numel));
    }
    auto location = std::make_shared<TensorLocation>();
    location->store = std::move(store);
    location->storage = storage;
    location->dtype = &dtype;
    location->big_endian = big_endian;
    location->shape = view.shape;
    location->stride = view.stride;
    location->storage_offset = view.storage_offset;
    location->span = numel > 0 ? last - view.storage_offset + 1 : 0;
    return Tensor{view.shape, {}, dtype.torch_name, std::move(location)};
}

// The zip entry holding a storage, after checking that it holds exactly the bytes data.pkl gives the storage.
zip_uint64_t check_storage_entry(const ZipStore& archive, const std::string& prefix,
                                 const pickle::StorageRef& storage) {
    const std::string& file = archive.file();
    int64_t expected_bytes;
    if (!checked_mul(storage.numel, storage.element_size, expected_bytes))
        throw Error(file, "storage '" + storage.key + "' claims an impossible size");
    const std::string entry = prefix + "data/" + storage.key;
    const zip_uint64_t index = locate(archive.zip(), entry, file);
    const zip_stat_t stat = archive.stat_entry(index);
    if (stat.size != static_cast<uint64_t>(expected_bytes))
        throw Error(file, "storage '" + entry + "' holds " + std::to_string(stat.size) + " bytes, but data.pkl says " +
                              std::to_string(storage.numel) + " " + storage.dtype + " elements (" +
                              std::to_string(expected_bytes) + " bytes); the file may be truncated or damaged");
    return index;
}

Checkpoint read_torch_archive(const std::shared_ptr<const ZipStore>& store) {
    const ZipStore& archive = *store;
    const std::string& file = archive.file();
    const std::string prefix = find_archive_prefix(archive.zip(), file);

    bool big_endian = false;
    if (zip_name_locate(archive.zip(), (prefix + "byteorder").c_str(), ZIP_FL_ENC_RAW) >= 0) {
        std::vector<uint8_t> order = read_entry(archive, locate(archive.zip(), prefix + "byteorder", file), 16);
        std::string text(order.begin(), order.end());
        if (text != "little" && text != "big") throw Error(file, "archive has an unknown byteorder '" + text + "'");
        big_endian = text == "big";
    }

    constexpr uint64_t kMaxPickleBytes = uint64_t{32} << 20;  // a SAM state dict's data.pkl is about 100 kB
    std::vector<uint8_t> pkl = read_entry(archive, locate(archive.zip(), prefix + "data.pkl", file), kMaxPickleBytes);
    pickle::Unpickler unpickler(file);
    pickle::Ref root = unpickler.load(std::string_view(reinterpret_cast<const char*>(pkl.data()), pkl.size()));
    pickle::Ref state_dict = find_state_dict(root, file);

    // DataParallel saves every name under "module."; the model does not expect that.
    const std::string parallel_prefix = "module.";
    const bool strip = std::all_of(state_dict->entries.begin(), state_dict->entries.end(),
                                   [&](const auto& entry) { return entry.first->text.rfind(parallel_prefix, 0) == 0; });

    // Each storage's entry is checked once, when a view of it first appears.
    std::map<std::string, std::pair<const pickle::StorageRef*, zip_uint64_t>> storages;
    Checkpoint checkpoint;
    checkpoint.path = file;
    for (const auto& [name, value] : state_dict->entries) {
        const pickle::TensorRef& view = value->tensor;
        auto [found, first_view] = storages.try_emplace(view.storage.key, &view.storage, 0);
        const pickle::StorageRef& storage = *found->second.first;
        if (first_view) found->second.second = check_storage_entry(archive, prefix, storage);
        if (view.storage.dtype != storage.dtype || view.storage.numel != storage.numel)
            throw Error(file, "storage '" + storage.key + "' is described inconsistently in data.pkl");
        const std::string key = strip ? name->text.substr(parallel_prefix.size()) : name->text;
        checkpoint.tensors[key] = index_view(key, view, *find_dtype(storage.dtype, false), store,
                                             found->second.second, big_endian, file);
    }
    return checkpoint;
}

// ---- safetensors -------------------------------------------------------------------------------------------------

constexpr int kMaxHeaderDepth = 16;

// A header value for an error message, cut short.
std::string preview(const nlohmann::json& value) {
    constexpr size_t kMaxChars = 60;
    std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (text.size() > kMaxChars) text = text.substr(0, kMaxChars) + "...";
    return text;
}

Checkpoint read_safetensors(const std::shared_ptr<const ByteSource>& source) {
    const std::string& file = source->name();
    auto invalid = [&](const std::string& why) { return Error(file, "invalid safetensors file: " + why); };
    if (source->size() < 8) throw invalid("shorter than its 8-byte header length");
    uint64_t header_size;
    source->read(0, 8, &header_size);
    // A SAM's header is ~60 kB; parsed JSON takes up to ~20 times its text in memory.
    constexpr uint64_t kMaxHeaderBytes = uint64_t{8} << 20;
    if (header_size > source->size() - 8 || header_size > kMaxHeaderBytes)
        throw invalid("header length " + std::to_string(header_size) + " runs past the end of the file");
    std::string text(header_size, '\0');
    source->read(8, header_size, text.data());
    nlohmann::json header;
    try {
        // A tensor's entry nests 3 deep; refusing deeper nesting while parsing keeps everything after (printing
        // a value in an error message recurses) from running out of stack on a header nested 100,000 deep.
        header = nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
            if (depth > kMaxHeaderDepth)
                throw invalid("header nests JSON deeper than " + std::to_string(kMaxHeaderDepth) + " levels");
            return true;
        });
    } catch (const nlohmann::json::exception& e) {  // its message quotes the bad token, which may be long
        throw invalid("header is not JSON (" + std::string(e.what()).substr(0, 200) + ")");
    }
    if (!header.is_object()) throw invalid("header is not a JSON object");

    const uint64_t data_start = 8 + header_size;
    const uint64_t data_size = source->size() - data_start;
    const auto store = std::make_shared<const SafetensorsStore>(source);
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
        if (!dtype) throw bad("has an unsupported dtype " + preview(dtype_name));
        auto location = std::make_shared<TensorLocation>();
        const nlohmann::json& shape = info["shape"];
        if (!shape.is_array()) throw bad("has a shape that is not a list");
        for (const auto& dim : shape) {
            if (!dim.is_number_unsigned() || dim.get<uint64_t>() > (uint64_t{1} << 40))
                throw bad("has an invalid dimension " + preview(dim));
            location->shape.push_back(dim.get<int64_t>());
        }
        const nlohmann::json& offsets = info["data_offsets"];
        if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
            !offsets[1].is_number_unsigned())
            throw bad("has invalid data_offsets " + preview(offsets));
        const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
        const int64_t numel = checked_numel(location->shape);
        int64_t bytes;
        if (numel < 0 || !checked_mul(numel, dtype->size, bytes)) throw bad("has too many elements");
        if (begin > end || end > data_size)
            throw bad("has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] outside the " +
                      std::to_string(data_size) + " data bytes");
        if (end - begin != static_cast<uint64_t>(bytes))
            throw bad("has " + std::to_string(end - begin) + " data bytes, but its shape " +
                      shape_to_string(location->shape) + " of " + dtype->safetensors_name + " needs " +
                      std::to_string(bytes));
        location->store = store;
        location->storage = data_start + begin;
        location->dtype = dtype;
        location->stride = row_major_strides(location->shape);
        location->span = numel;
        const std::vector<int64_t> tensor_shape = location->shape;
        checkpoint.tensors[key] = Tensor{tensor_shape, {}, dtype->torch_name, std::move(location)};
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

// A tensor's values: `data` when it holds them, else read from its file now. `owner` names the file in the
// errors about an in-memory tensor.
std::vector<float> tensor_values(const std::string& name, const Tensor& tensor, const std::string& owner) {
    if (!tensor.data.empty() || !tensor.location) {
        if (static_cast<int64_t>(tensor.data.size()) != tensor.numel())
            throw Error(owner, "tensor '" + name + "' " + tensor.shape_string() + " holds " +
                                   std::to_string(tensor.data.size()) + " values");
        return tensor.data;
    }
    const TensorLocation& where = *tensor.location;
    const std::string& file = where.store->file();
    if (where.shape != tensor.shape)
        throw Error(file, "tensor '" + name + "' was given shape " + tensor.shape_string() + " after loading; its " +
                              "values in the file have shape " + shape_to_string(where.shape));
    try {
        return read_values(where);
    } catch (const Error& e) {
        throw Error(file, "cannot read tensor '" + name + "': " + e.problem());
    }
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

std::vector<float> Checkpoint::read(const std::string& name, const std::vector<int64_t>& expected_shape) const {
    return tensor_values(name, get(name, expected_shape), path);
}

bool Checkpoint::has(const std::string& name) const { return tensors.count(name) > 0; }

Checkpoint load_torch_zip(const std::string& path) { return read_torch_archive(ZipStore::open_file(path)); }

Checkpoint load_safetensors(const std::string& path) {
    return read_safetensors(std::make_shared<const FileSource>(path));
}

Checkpoint load_checkpoint(const std::string& path) {
    auto source = std::make_shared<const FileSource>(path);
    if (detect_format(*source) == Format::Safetensors) return read_safetensors(source);
    return load_torch_zip(path);
}

Checkpoint load_checkpoint_from_memory(const void* data, size_t size, const std::string& name) {
    auto source = std::make_shared<const MemorySource>(data, size, name);
    if (detect_format(*source) == Format::Safetensors) return read_safetensors(source);
    return read_torch_archive(ZipStore::open_memory(source));
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors) {
    nlohmann::json header = nlohmann::json::object();
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t offset = 0;
    for (const auto& [name, tensor] : tensors) {
        const bool in_memory = !tensor.data.empty() || !tensor.location;
        if (tensor.numel() < 0 || (in_memory && tensor.data.size() != static_cast<size_t>(tensor.numel())))
            throw Error(path, "cannot save tensor '" + name + "': " + std::to_string(tensor.data.size()) +
                                  " values for shape " + tensor.shape_string());
        const uint64_t bytes = static_cast<uint64_t>(tensor.numel()) * sizeof(float);
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
    for (const auto& [name, tensor] : tensors) {  // one tensor's values at a time, read from its file if it has one
        const std::vector<float> values = tensor_values(name, tensor, path);
        out.write(reinterpret_cast<const char*>(values.data()),
                  static_cast<std::streamsize>(values.size() * sizeof(float)));
    }
    out.close();
    if (!out) throw Error(path, "writing the safetensors file failed (disk full?)");
}

}  // namespace sqasam::sam
