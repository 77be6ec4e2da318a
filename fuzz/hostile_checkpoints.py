#!/usr/bin/env python3
"""Writes the hostile checkpoints of issue 12 into a folder, for measuring sqasam's peak memory on them
(fuzz/NOTES.md): safetensors headers nested 100,000 deep in each field, a ~260 KB .pth whose data.pkl inflates to
256 MiB of NONE/POP opcodes, nesting and memo bombs of 10-60 KB, a zip entry claiming far more than it holds, and a
checkpoint with flipped weight bytes. Usage: hostile_checkpoints.py <folder> (needs nothing beyond Python)."""
import json
import struct
import sys
import zipfile
from pathlib import Path

PROTO = b"\x80\x02"


def safetensors(header: str) -> bytes:
    data = header.encode()
    return struct.pack("<Q", len(data)) + data + b"\0" * 4


def torch_zip(path: Path, pickle: bytes, storages=None, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression, compresslevel=9 if compression else None) as archive:
        archive.writestr("archive/data.pkl", pickle)
        for key, data in (storages or {}).items():
            archive.writestr(zipfile.ZipInfo(f"archive/data/{key}"), data)


def one_tensor_pickle(numel: int) -> bytes:
    def unicode(text):
        return b"X" + struct.pack("<I", len(text)) + text.encode()
    count = b"M" + struct.pack("<H", numel)
    return (PROTO + b"}" + unicode("w") + b"ctorch._utils\n_rebuild_tensor_v2\n((" + unicode("storage")
            + b"ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") + count + b"tQK\0" + count
            + b"\x85K\x01\x85tRs.")


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    depth = 100_000
    rest = '"shape":[1],"data_offsets":[0,4]'
    headers = {
        "nest_dtype": '{"a":{"dtype":' + "[" * depth + '"F32"' + "]" * depth + "," + rest + "}}",
        "nest_shape": '{"a":{"dtype":"F32","shape":' + "[" * depth + "1" + "]" * depth + ',"data_offsets":[0,4]}}',
        "nest_offsets": '{"a":{"dtype":"F32","shape":[1],"data_offsets":' + "[" * depth + "0" + "]" * depth + "}}",
        "nest_metadata": '{"__metadata__":' + "[" * depth + '"x"' + "]" * depth + ',"a":{"dtype":"F32",' + rest + "}}",
    }
    for name, header in headers.items():
        (out / f"{name}.safetensors").write_bytes(safetensors(header))

    torch_zip(out / "none_pop_256mib.pth", PROTO + b"N0" * (128 << 20))
    # Just under the 32 MiB data.pkl cap, so that they reach the unpickler's own limits (30-60 KB on disk), and one
    # over it.
    size = 30 << 20
    bombs = {
        "none_pop": PROTO + b"N0" * (size // 2),
        "marks": PROTO + b"(" * size,
        "empty_lists": PROTO + b"]" * size,
        "nested_lists": PROTO + b"]" * (size // 2) + b"a" * (size // 2),
        "empty_dicts": PROTO + b"}" * size,
        "tuples": PROTO + b")" * size,
        "dup": PROTO + b"N" + b"2" * size,
        "memo": PROTO + b"N" + b"".join(b"r" + struct.pack("<I", key) for key in range(1 << 20)),
        "marks_56mib": PROTO + b"(" * (56 << 20),
    }
    for name, pickle in bombs.items():
        torch_zip(out / f"bomb_{name}.pth", pickle)

    numel = 1024
    weights = bytes((i * 2654435761 >> 13) & 0xFF for i in range(4 * numel))
    torch_zip(out / "flipped_weights.pth", one_tensor_pickle(numel), {"0": weights}, zipfile.ZIP_STORED)
    data = bytearray((out / "flipped_weights.pth").read_bytes())
    at = data.find(weights[:64]) + 1000
    data[at:at + 16] = bytes(b ^ 0x5A for b in data[at:at + 16])
    (out / "flipped_weights.pth").write_bytes(bytes(data))
    print("\n".join(sorted(f"{p.name} {p.stat().st_size}" for p in out.iterdir())))


if __name__ == "__main__":
    main()
