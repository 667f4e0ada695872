"""Read a TensorFlow 1 checkpoint (``.index`` + ``.data-00000-of-00001``) without TensorFlow.

The index is a LevelDB-format sorted table (footer, index block, data blocks of prefix-compressed
keys) whose values are ``BundleEntryProto`` messages: dtype, shape, shard, offset and size of each
tensor's raw little-endian bytes in the data shard. Only what TensorFlow's saver writes for
float variables is supported; anything else raises ``CheckpointError`` naming the tensor.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from chorus.errors import ChorusError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5  # one byte of compression type, four of CRC
DTYPES: dict[int, np.dtype] = {1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 9: np.dtype("<i8"), 10: np.dtype("?")}


class CheckpointError(ChorusError):
    """A checkpoint file that this reader cannot interpret."""


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _fields(message: bytes) -> Iterator[tuple[int, Any]]:
    """Yield (field number, value) of a protobuf message: varints as int, length-delimited as bytes."""
    at = 0
    while at < len(message):
        key, at = _varint(message, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(message, at)
            yield number, value
        elif wire == 2:
            length, at = _varint(message, at)
            yield number, message[at:at + length]
            at += length
        elif wire == 5:
            yield number, int.from_bytes(message[at:at + 4], "little")
            at += 4
        elif wire == 1:
            yield number, int.from_bytes(message[at:at + 8], "little")
            at += 8
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")


def _block(table: bytes, offset: int, size: int) -> Iterator[tuple[bytes, bytes]]:
    """Yield the (key, value) entries of one uncompressed table block."""
    if table[offset + size] != 0:
        raise CheckpointError(f"table block at {offset} is compressed (type {table[offset + size]}); only raw blocks are read")
    block = table[offset:offset + size]
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 * (restarts + 1)
    at, key = 0, b""
    while at < end:
        shared, at = _varint(block, at)
        unshared, at = _varint(block, at)
        length, at = _varint(block, at)
        key = key[:shared] + block[at:at + unshared]
        at += unshared
        yield key, block[at:at + length]
        at += length


def read_index(index: bytes) -> dict[str, tuple[np.dtype, tuple[int, ...], int, int]]:
    """Map each tensor name of a checkpoint index to (dtype, shape, offset, size) in the data shard."""
    if len(index) < FOOTER_BYTES or struct.unpack("<Q", index[-8:])[0] != TABLE_MAGIC:
        raise CheckpointError("not a TensorFlow checkpoint index (bad table magic)")
    footer = index[-FOOTER_BYTES:]
    _, at = _varint(footer, 0)  # metaindex handle: unused
    _, at = _varint(footer, at)
    index_offset, at = _varint(footer, at)
    index_size, _ = _varint(footer, at)
    entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
    for _, handle in _block(index, index_offset, index_size):
        block_offset, at = _varint(handle, 0)
        block_size, _ = _varint(handle, at)
        for key, value in _block(index, block_offset, block_size):
            if key:  # the empty key holds the bundle header
                entries[key.decode()] = _entry(key.decode(), value)
    return entries


def _entry(name: str, message: bytes) -> tuple[np.dtype, tuple[int, ...], int, int]:
    dtype_code, shard, offset, size = 0, 0, 0, 0
    shape: tuple[int, ...] = ()
    for number, value in _fields(message):
        if number == 1:
            dtype_code = value
        elif number == 2:  # TensorShapeProto: repeated Dim (field 2) of size (field 1)
            shape = tuple(int(dict(_fields(dim)).get(1, 0)) for n, dim in _fields(value) if n == 2)
        elif number == 3:
            shard = value
        elif number == 4:
            offset = value
        elif number == 5:
            size = value
        elif number == 7:
            raise CheckpointError(f"{name}: partitioned (sliced) variables are not supported")
    if dtype_code not in DTYPES:
        raise CheckpointError(f"{name}: unsupported dtype code {dtype_code}")
    if shard != 0:
        raise CheckpointError(f"{name}: lives in data shard {shard}; only single-shard checkpoints are read")
    return DTYPES[dtype_code], shape, offset, size


def read_checkpoint(index: bytes, data: bytes) -> Mapping[str, np.ndarray]:
    """Every tensor of a checkpoint, by its TensorFlow variable name.

    Parameters
    ----------
    index : bytes
        The ``.index`` file's contents.
    data : bytes
        The ``.data-00000-of-00001`` file's contents.
    """
    tensors = {}
    for name, (dtype, shape, offset, size) in read_index(index).items():
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != expected or offset + size > len(data):
            raise CheckpointError(f"{name}: {size} bytes at {offset} do not hold a {dtype} tensor of shape {shape}")
        tensors[name] = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=offset).reshape(shape).copy()
    return tensors
