// AMX helpers shared by the *_avx512amx.cc kernels (built with -mamx-tile -mamx-int8): the tile
// configuration, C tiles addressed by a runtime index (tile numbers are immediates), and the
// staging of activation rows into a 16 x 64-byte buffer for row and K tails.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace pq {
namespace amx {

constexpr size_t kTileRows = 16;
constexpr size_t kTileBytes = 64;  // bytes per tile row

// Palette 1 with tiles 0-3 as 16 x 16 int32 C tiles, 4-5 A tiles of 16 rows x a_bytes, 6-7 B
// tiles of b_rows x 64 bytes. Per thread; the kernels release the tiles when they return.
inline void configure(size_t a_bytes, size_t b_rows) {
  struct alignas(64) {
    uint8_t palette = 1, start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
  } cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = static_cast<uint16_t>(t < 4 || t >= 6 ? kTileBytes : a_bytes);
    cfg.rows[t] = static_cast<uint8_t>(t < 6 ? kTileRows : b_rows);
  }
  _tile_loadconfig(&cfg);
}

inline void zero_c(size_t t) {
  switch (t) {
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    default: _tile_zero(3); break;
  }
}
inline void store_c(size_t t, int32_t* buf) {
  switch (t) {
    case 0: _tile_stored(0, buf, kTileBytes); break;
    case 1: _tile_stored(1, buf, kTileBytes); break;
    case 2: _tile_stored(2, buf, kTileBytes); break;
    default: _tile_stored(3, buf, kTileBytes); break;
  }
}
inline void load_c(size_t t, const int32_t* buf) {
  switch (t) {
    case 0: _tile_loadd(0, buf, kTileBytes); break;
    case 1: _tile_loadd(1, buf, kTileBytes); break;
    case 2: _tile_loadd(2, buf, kTileBytes); break;
    default: _tile_loadd(3, buf, kTileBytes); break;
  }
}

// Bytes [k0, k0 + bytes) of `rows` rows of a (stride lda) into buf (stride 64). The caller
// zeroes buf where nothing is copied (rows >= `rows`, bytes past `bytes`): zero x anything adds
// nothing to the tile product.
inline void copy_rows(const uint8_t* a, size_t lda, size_t rows, size_t k0, size_t bytes,
                      uint8_t* buf) {
  for (size_t r = 0; r < rows; ++r) std::memcpy(buf + r * kTileBytes, a + r * lda + k0, bytes);
}

}  // namespace amx
}  // namespace pq
