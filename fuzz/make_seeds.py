#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (deterministic; re-run after a format change).

Each file is one valid (or instructively invalid) input in the target's own framing: see
fuzz/harness.h for the mode byte some targets take first.
"""
import gzip
import json
import math
import os
import pathlib
import shutil
import struct
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def idx(dims, payload):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", x) for x in dims) + payload


def gz(data):
    return gzip.compress(data, mtime=0)


def checkpoint(tensors, epochs_done=1):
    header = {
        "format": "pimtrain checkpoint",
        "epochs_done": epochs_done,
        "metrics_jsonl": '{"epoch":1,"train_loss":1.0}\n',
        "config_yaml": "seed: 1\n",
        "tensors": [{"name": n, "shape": s, "numel": math.prod(s)} for n, s in tensors],
    }
    h = json.dumps(header, separators=(",", ":")).encode()
    out = b"PIMCKPT1" + struct.pack("<I", len(h)) + h
    for n, s in tensors:
        numel = math.prod(s)
        out += struct.pack("<%df" % numel, *[0.25 * i - 1 for i in range(numel)])
    return out + struct.pack("<I", zlib.crc32(out))


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)

    # config: the shipped configs and presets, plus small valid and invalid ones.
    for src in sorted((ROOT / "configs").glob("*.yaml")) + sorted(
            (ROOT / "presets" / "chips").glob("*.yaml")):
        write("config", src.name, src.read_bytes())
    write("config", "synthetic.yaml",
          "seed: 3\ndata: {impl: synthetic, train_size: 64, test_size: 32}\n"
          "model: {impl: mlp, layers: [64, 16, 10]}\n"
          "train: {epochs: 1, batch_size: 8, on_nonfinite: skip_step}\n"
          "limits: {max_memory_bytes: 1e9, max_macs_per_epoch: 1e12}\n")
    write("config", "sequential.yaml",
          "model:\n  impl: sequential\n  layers:\n"
          "    - {impl: conv2d, out_channels: 4, kernel: 3, padding: 1}\n"
          "    - {impl: batch_norm}\n    - {impl: relu}\n    - {impl: max_pool2d, kernel: 2}\n"
          "    - {impl: flatten}\n    - {impl: dropout, p: 0.25}\n"
          "    - {impl: linear, out_features: 10}\n"
          "train: {optimizer: {impl: adam, learning_rate: 0.001}, schedule: {impl: step}}\n")
    write("config", "unknown_key.yaml", "train: {epocs: 3}\n")
    write("config", "wrong_type.yaml", "train: {epochs: three}\n")
    write("config", "anchors.yaml", "a: &x {impl: sgd}\ntrain: {optimizer: *x}\n")

    # idx: mode byte (bit 0: labels, bit 1: gzip-wrap) + file.
    images = idx([2, 4, 4], bytes(range(32)))
    labels = idx([2], bytes([3, 9]))
    write("idx", "images_raw", b"\x00" + images)
    write("idx", "labels_raw", b"\x01" + labels)
    write("idx", "images_gzip_wrapped", b"\x02" + images)
    write("idx", "labels_gzip_wrapped", b"\x03" + labels)
    write("idx", "images_gzip_file", b"\x00" + gz(images))
    write("idx", "labels_truncated", b"\x01" + labels[:-1])

    # cifar10: mode byte (bit 0: gzip-wrap) + data_batch_1.bin (3073-byte records).
    record = bytes([7]) + bytes((i * 7) & 0xFF for i in range(3072))
    write("cifar10", "one_record", b"\x00" + record)
    write("cifar10", "one_record_gzip_wrapped", b"\x01" + record)
    write("cifar10", "gzip_file", b"\x00" + gz(record))
    write("cifar10", "empty", b"\x00")

    # checkpoint: mode byte (bit 0: fix the CRC, bit 1: load by name) + file.
    good = checkpoint([("layers.1.weight", [3, 4]), ("layers.1.bias", [4]),
                       ("optimizer.0", [3, 4])])
    write("checkpoint", "exact", b"\x00" + good)
    write("checkpoint", "exact_crc_fixed", b"\x01" + good)
    write("checkpoint", "by_name_extra_tensor", b"\x03" + checkpoint(
        [("layers.0.gamma", [2]), ("layers.1.weight", [3, 4]), ("layers.1.bias", [4]),
         ("optimizer.0", [3, 4])]))
    write("checkpoint", "wrong_shape", b"\x01" + checkpoint(
        [("layers.1.weight", [4, 3]), ("layers.1.bias", [4]), ("optimizer.0", [3, 4])]))

    # results: JSONL sweep results.
    write("results", "two_points",
          '{"point":"lr=0.1","status":"ok","metrics":{"test_accuracy":0.91}}\n'
          '{"point":"lr=1","status":"failed","error":"NaN in layer 1"}\n')
    write("results", "retry_and_torn_tail",
          '{"point":"a","status":"failed"}\n{"point":"a","status":"ok"}\n{"point":"b","sta')
    write("results", "crlf_blank", '\r\n{"point":"x","status":"ok","overrides":{"seed":2}}\r\n')


if __name__ == "__main__":
    main()
