#include "packed_batch.h"

#include <cstdlib>
#include <cstring>
#include <new>

PackedBatch::~PackedBatch() { free(data_); }

void PackedBatch::Reserve(size_t capacity) {
  if (capacity <= capacity_) return;
  // Doubling keeps growth amortized; realloc keeps the messages packed so far.
  const size_t grown = capacity_ * 2 > capacity ? capacity_ * 2 : capacity;
  void* moved = realloc(data_, grown);
  if (moved == nullptr) throw std::bad_alloc();
  data_ = static_cast<uint8_t*>(moved);
  capacity_ = grown;
}

void* PackedBatch::ReceiveSlot(size_t bodyCapacity) {
  Reserve(size_ + kHeaderBytes + bodyCapacity);
  return data_ + size_ + kMsgbufOffset;
}

void PackedBatch::CommitReceived(size_t bodySize) {
  uint8_t* message = data_ + size_;
  long type;
  memcpy(&type, message + kMsgbufOffset, sizeof(type));
  const int64_t packedType = type;
  const uint32_t packedSize = static_cast<uint32_t>(bodySize);
  memcpy(message, &packedType, sizeof(packedType));
  memcpy(message + sizeof(packedType), &packedSize, sizeof(packedSize));
  size_ += kHeaderBytes + bodySize;
}

uint8_t* PackedBatch::Release() {
  if (size_ == 0) {
    free(data_);
    data_ = nullptr;
    capacity_ = 0;
    return nullptr;
  }
  // The last receive slot may have left up to msgmax spare bytes: give them back before JS holds the buffer.
  void* shrunk = realloc(data_, size_);
  uint8_t* bytes = shrunk != nullptr ? static_cast<uint8_t*>(shrunk) : data_;
  data_ = nullptr;
  size_ = 0;
  capacity_ = 0;
  return bytes;
}

std::string PackedBatch::Validate(const uint8_t* data, size_t length, uint32_t count) {
  size_t offset = 0;
  for (uint32_t index = 0; index < count; index++) {
    if (length - offset < kHeaderBytes) {
      return "message " + std::to_string(index) + " header at byte " + std::to_string(offset) + " runs past the end (" +
             std::to_string(length) + " bytes)";
    }
    uint32_t bodySize;
    memcpy(&bodySize, data + offset + sizeof(int64_t), sizeof(bodySize));
    if (length - offset - kHeaderBytes < bodySize) {
      return "message " + std::to_string(index) + " body of " + std::to_string(bodySize) + " bytes at byte " +
             std::to_string(offset + kHeaderBytes) + " runs past the end (" + std::to_string(length) + " bytes)";
    }
    offset += kHeaderBytes + bodySize;
  }
  if (offset != length) {
    return std::to_string(count) + " messages end at byte " + std::to_string(offset) + " but the buffer has " +
           std::to_string(length) + " bytes";
  }
  return "";
}

void* PackedBatch::ToMsgbufInPlace(uint8_t* message, int64_t& type, uint32_t& bodySize) {
  memcpy(&type, message, sizeof(type));
  memcpy(&bodySize, message + sizeof(type), sizeof(bodySize));
  const long mtype = static_cast<long>(type);
  memcpy(message + kMsgbufOffset, &mtype, sizeof(mtype));
  return message + kMsgbufOffset;
}
