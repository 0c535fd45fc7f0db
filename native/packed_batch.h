// The packed message layout shared with lib/native.ts: per message, little-endian int64 type,
// uint32 body size, then the body; no padding. Batches, not single messages, cross to JS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the packed layout is the host's order, little-endian");
static_assert(sizeof(long) == 8, "struct msgbuf's mtype must be the packed int64 type");

class PackedBatch {
 public:
  // Must equal PACKED_MESSAGE_HEADER_BYTES in lib/native.ts (test/native checks it).
  static constexpr size_t kHeaderBytes = 12;

  PackedBatch() = default;
  ~PackedBatch();
  PackedBatch(const PackedBatch&) = delete;
  PackedBatch& operator=(const PackedBatch&) = delete;

  // Where msgrcv may write a struct msgbuf (long mtype, then up to bodyCapacity bytes), right after
  // the packed bytes so far, so that CommitReceived packs it in place without another copy.
  void* ReceiveSlot(size_t bodyCapacity);
  // Packs the message msgrcv just wrote at ReceiveSlot() and appends it.
  void CommitReceived(size_t bodySize);

  static size_t PackedSize(size_t bodySize) { return kHeaderBytes + bodySize; }
  size_t size() const { return size_; }
  // Drops every byte from `size` on (a queue of a batch whose copy failed).
  void Truncate(size_t size) {
    if (size < size_) size_ = size;
  }

  // Hands the bytes over, shrunk to size(); free() them. nullptr when empty.
  uint8_t* Release();

  // Checks that [data, data + length) holds exactly `count` packed messages; returns what is wrong, or "".
  static std::string Validate(const uint8_t* data, size_t length, uint32_t count);

  // Turns the packed message at `message` (inside a buffer the caller owns) into a struct msgbuf in place,
  // returning the msgbuf's address; bodySize and type receive the header's fields. The header is overwritten.
  static void* ToMsgbufInPlace(uint8_t* message, int64_t& type, uint32_t& bodySize);

 private:
  // Where a msgbuf starts inside the room for one packed message: its 8-byte mtype then ends at the body.
  static constexpr size_t kMsgbufOffset = kHeaderBytes - sizeof(long);

  void Reserve(size_t capacity);

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};
